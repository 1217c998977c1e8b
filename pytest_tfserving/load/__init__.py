"""Load generation and latency statistics for the SLA gate and the ``tfs_load`` fixture.

Cheap to import (no grpc, no TensorFlow here); import ``generator`` for ``run_load``.
"""
