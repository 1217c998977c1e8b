"""TF Serving's warmup contract, shared by the bundled server that replays a warmup file and the
gate that checks the replay: the record limit and the log lines (their format and parser).

From ``tensorflow_serving/servables/tensorflow/saved_model_warmup_util.{h,cc}``: a warmup file
of more than ``WarmupConsts::kMaxNumRecords`` (1000) records fails the model load; after a
replay the server logs ``Finished reading warmup data for model at <path>. Number of warmup
records read: N. Elapsed time (microseconds): T.`` (N counts records, not the
``--num_request_iterations_for_warmup`` replays of each); a model without a file logs ``No
warmup data file found at <path>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords: more records fail the model load

_FINISHED = ("Finished reading warmup data for model at {path}. Number of warmup records read: "
             "{records}. Elapsed time (microseconds): {micros}.")
_NO_FILE = "No warmup data file found at {path}"


def _pattern(template: str, groups: dict[str, str]) -> re.Pattern[str]:
    """A regex that matches ``template`` (its placeholders as named groups); the final period
    is optional, and whatever a log prefixes (glog header, docker timestamp) is tolerated."""
    text = re.escape(template.removesuffix("."))
    for name, group in groups.items():
        text = text.replace(re.escape("{" + name + "}"), f"(?P<{name}>{group})")
    return re.compile(text)


FINISHED_LINE = _pattern(_FINISHED, {"path": ".+?", "records": r"\d+", "micros": r"\d+"})
NO_FILE_LINE = _pattern(_NO_FILE, {"path": r"\S+"})


@dataclass(frozen=True)
class ReplayLine:
    """TF Serving's "Finished reading warmup data" line, parsed."""

    path: str
    records: int
    micros: int


def finished_line(path: object, records: int, micros: int) -> str:
    """The line a server logs after replaying ``records`` records of the file at ``path``."""
    return _FINISHED.format(path=path, records=records, micros=micros)


def no_file_line(path: object) -> str:
    """The line a server logs when a model version has no warmup file at ``path``."""
    return _NO_FILE.format(path=path)


def parse_replay_lines(log_text: str) -> list[ReplayLine]:
    """Every "Finished reading warmup data ..." line in a server log, in order."""
    return [ReplayLine(m["path"], int(m["records"]), int(m["micros"]))
            for m in FINISHED_LINE.finditer(log_text)]


def no_file_lines(log_text: str) -> list[str]:
    """Paths from "No warmup data file found at ..." lines."""
    return [m["path"] for m in NO_FILE_LINE.finditer(log_text)]
