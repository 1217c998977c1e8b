"""The part of a server log a user reads on a failure: TensorFlow's start-up notices left out."""

from __future__ import annotations

import re

# TensorFlow's C++ start-up lines: true on every machine, never the reason a server failed.
_NOISE = re.compile("|".join([
    r"oneDNN custom operations are on",
    r"TF_ENABLE_ONEDNN_OPTS",
    r"This TensorFlow binary is optimized",
    r"To enable the following instructions:",
    r"rebuild TensorFlow with the appropriate compiler flags",
    r"All log messages before absl::InitializeLog\(\) is called",
    r"Could not find cuda drivers",
    r"cuInit",
    r"cuda_(?:blas|dnn|fft)\.cc",
    r"Unable to register cu(?:DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning",
    r"kernel may have been built without NUMA support",
]))


def readable_lines(log: str) -> list[str]:
    """The log's lines without TensorFlow's start-up notices."""
    return [line for line in log.splitlines() if not _NOISE.search(line)]


def readable_tail(log: str, lines: int = 60) -> str:
    """The last ``lines`` readable lines of ``log``."""
    return "\n".join(readable_lines(log)[-lines:])
