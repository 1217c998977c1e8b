"""The bundled TF-Serving-compatible server: ``python -m pytest_tfserving.bundled_server``.

It takes ``tensorflow_model_server``'s flag names and answers its gRPC and REST APIs for one model,
with TF Serving's dynamic batching semantics, warmup replay and Prometheus metric names. It is the
stand-in wherever no real TF Serving is available. One module per job:

- ``flags``: command line (TF Serving's flags) and the monitoring config file
- ``logs``: TF-Serving-like log lines on stderr
- ``status``: ``ServingError`` (a gRPC code plus a message) and its HTTP mapping
- ``state``: the model's version state machine (START -> LOADING -> AVAILABLE | END)
- ``servable``: loading a SavedModel version and calling its signatures cheaply
- ``convert``: PredictRequest <-> arrays, with TF Serving's validation messages
- ``batcher``: the BasicBatchScheduler (queues, timeouts, padding, queue-full)
- ``core``: the request pipeline shared by gRPC, REST and warmup
- ``classify``: Classify / Regress on top of the pipeline
- ``metrics``: TF Serving's metric names, rendered as its Prometheus exporter does
- ``grpc_service`` / ``rest``: the two front ends
- ``warmup``: TFRecord reader and warmup replay
- ``app``: startup order, signals, shutdown
"""
