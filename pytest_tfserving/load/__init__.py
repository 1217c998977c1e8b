"""Load generation and latency statistics for the SLA gate and the ``tfs_load`` fixture.

Cheap to import (no grpc, no TensorFlow here). ``driver.run_load`` runs a load described by
``spec.LoadSpec`` and returns a ``result.LoadResult``; ``protocol`` is the boundary with the
worker processes (``worker``), which send over ``h2grpc``.
"""
