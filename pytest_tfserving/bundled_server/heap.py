"""The server process's garbage-collector policy: what a load or an unload may cost requests.

A collection holds the GIL for as long as it walks the tracked objects, and every request (the
event loop, the model threads) waits for it. Importing TensorFlow leaves ~370,000 tracked objects
that live as long as the process; a full collection over them takes 200-580 ms (measured here),
which requests see as a stall. So:

- ``freeze_baseline()`` runs once on the manager thread before the first model loads: it imports
  what loading and warmup use, collects, and moves every surviving object to the permanent
  generation (``gc.freeze``), where no collection walks it again.
- ``collect_versions()`` after a load (warmup included) and after an unload collects only what was
  created since: the served versions' graphs and the requests' garbage (a few hundred to a few
  thousand objects per version: ~0.1-4 ms). An unloaded version's ``tf.Graph`` sits in a
  reference cycle, so this collection is what frees it (and its C graph).
- The heap is never unfrozen: ``gc.unfreeze()`` puts the whole baseline back in the young
  generations, and the next collection walks it all (the stall above). Versions are not frozen
  either: a frozen version's cycles could never be collected after its unload (a leak per swap).
"""

from __future__ import annotations

import gc
import time

from pytest_tfserving.bundled_server.logs import get_logger


def freeze_baseline() -> None:
    """Import what loading uses, collect once, freeze the survivors (the process's baseline)."""
    import tensorflow as tf
    from tensorflow_serving.apis import (  # noqa: F401 - imported for their objects
        classification_pb2,
        inference_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    tf.compat.v1.saved_model.loader.load  # noqa: B018 - resolves TF's lazily loaded modules
    t0 = time.monotonic()
    gc.collect()
    gc.freeze()
    get_logger().debug("Froze %d objects in %.0f ms", gc.get_freeze_count(),
                       (time.monotonic() - t0) * 1e3)


def collect_versions() -> None:
    """Collect what is not frozen: the versions loaded or unloaded since the baseline."""
    t0 = time.monotonic()
    found = gc.collect()
    get_logger().debug("Collected %d objects in %.1f ms", found, (time.monotonic() - t0) * 1e3)
