"""Batching and thread-pool tuning: search TF Serving's serving config for the highest QPS
within the p99 budget (issue 14).

- ``space``: the candidates (``Candidate``) and the search space with TF Serving's rules.
- ``search``: the search core (guidance start, coordinate descent, confirmation of the
  leaders) over any ``trial(candidate, stage) -> TrialResult``; independent of pytest.
- ``served``: the real trial: serve a candidate through the session's launcher and measure it.
- batching invariance (answers alone vs coalesced into batches must agree) is
  ``pytest_tfserving.batching_invariance``, shared with the ``serving`` gate.
- ``output``: the table, the batching file and flags line, the JSON and the plot.
"""
