"""INT8 post-training quantization and its accuracy cost (the ``int8_delta`` gate's parts).

``eval_data`` loads and checks the evaluation set, ``quantize`` turns the SavedModel into float
and full-integer TFLite flatbuffers, ``evaluate`` runs both sides in batches and times them,
``metrics`` scores predictions and checks TFMA-style change thresholds. Nothing here imports
TensorFlow at module level.
"""
