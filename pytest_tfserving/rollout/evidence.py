"""Warmup evidence for one version of a rollout: the server's log line and its metrics.

The log line is TF Serving's ``Finished reading warmup data for model at <path>. Number of warmup
records read: N ...`` (the bundled server writes it too); TF Serving also counts the records in
``:tensorflow:serving:model_warmup_records_read{model_path=...}`` and times the replay in
``:tensorflow:serving:model_warmup_latency``. Both are matched to a version by its dir in the
path (the page is read by the load's Prometheus parser, ``load.server_metrics.parse``).
"""

from __future__ import annotations

from typing import Any

RECORDS_METRIC = ":tensorflow:serving:model_warmup_records_read"
LATENCY_METRIC = ":tensorflow:serving:model_warmup_latency"


def _is_version(path: str, version: int) -> bool:
    """Whether ``path`` lies in the dir of ``version``: the metrics' ``model_path`` is the version
    dir, the log line's path the warmup file under it (``<version>/assets.extra/...``); the
    version is the last all-digit component (``00000123`` is 123, as TF Serving reads it)."""
    digits = [part for part in path.rstrip("/").split("/") if part.isdigit()]
    return bool(digits) and int(digits[-1]) == version


def replay_from_log(log_text: str, version: int) -> dict[str, Any] | None:
    """{records, ms, path} of the version's last warmup line, or None when it has none."""
    from pytest_tfserving.warmup_contract import parse_replay_lines

    lines = [line for line in parse_replay_lines(log_text) if _is_version(line.path, version)]
    if not lines:
        return None
    last = lines[-1]
    return {"records": last.records, "ms": round(last.micros / 1e3, 3), "path": last.path}


def replay_from_metrics(metrics_text: str, version: int) -> dict[str, Any] | None:
    """{records, latency_ms} from TF Serving's warmup metrics for the version, or None."""
    from pytest_tfserving.load.server_metrics import parse

    snap = parse(metrics_text)

    def for_version(labels: tuple[tuple[str, str], ...]) -> bool:
        return _is_version(dict(labels).get("model_path", ""), version)

    records = [v for (name, labels), v in snap.counters.items()
               if name == RECORDS_METRIC and for_version(labels)]
    latencies = [h.sum for (name, labels), h in snap.histograms.items()
                 if name == LATENCY_METRIC and for_version(labels)]
    if not records and not latencies:
        return None
    return {"records": int(sum(records)), "latency_ms": round(sum(latencies) / 1e3, 3)}


def warmup_evidence(log_text: str, metrics_text: str, version: int) -> dict[str, Any]:
    """What the server says it replayed for ``version``: log line and metrics, when present."""
    out: dict[str, Any] = {}
    logged = replay_from_log(log_text, version)
    if logged is not None:
        out["log"] = logged
    metered = replay_from_metrics(metrics_text, version)
    if metered is not None:
        out["metrics"] = metered
    records = (logged or metered or {}).get("records")
    out["replayed_records"] = records if records is not None else 0
    return out
