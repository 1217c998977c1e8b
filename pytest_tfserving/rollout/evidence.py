"""Warmup evidence for one version of a rollout: the server's log line and its metrics.

The log line is TF Serving's ``Finished reading warmup data for model at <path>. Number of warmup
records read: N ...`` (the bundled server writes it too); TF Serving also counts the records in
``:tensorflow:serving:model_warmup_records_read{model_path=...}`` and times the replay in
``:tensorflow:serving:model_warmup_latency``. Both are matched to a version by the path's last
component.
"""

from __future__ import annotations

import re
from typing import Any

RECORDS_METRIC = ":tensorflow:serving:model_warmup_records_read"
LATENCY_METRIC = ":tensorflow:serving:model_warmup_latency"
_SAMPLE = re.compile(r'^(?P<name>[:\w]+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$', re.MULTILINE)
_PATH = re.compile(r'model_path="(?P<path>[^"]*)"')


def _is_version(path: str, version: int) -> bool:
    return path.rstrip("/").rsplit("/", 1)[-1].lstrip("0") == str(version).lstrip("0")


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
    records = 0.0
    latency_sum = 0.0
    seen = False
    for match in _SAMPLE.finditer(metrics_text):
        name = match["name"]
        path = _PATH.search(match["labels"])
        if path is None or not _is_version(path["path"], version):
            continue
        if name == RECORDS_METRIC:
            records += float(match["value"])
            seen = True
        elif name == LATENCY_METRIC + "_sum":
            latency_sum += float(match["value"])
            seen = True
    if not seen:
        return None
    return {"records": int(records), "latency_ms": round(latency_sum / 1e3, 3)}


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
