"""Log lines on stderr shaped like TF Serving's glog lines.

``2026-11-02 10:00:00.123456: I bundled_server/app.py:42] Running gRPC ModelServer at ...``
"""

from __future__ import annotations

import logging
import sys
import time

LOGGER_NAME = "tfserving"
_LEVELS = {"DEBUG": "I", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "F"}


class _GlogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        micros = int((record.created % 1) * 1_000_000)
        level = _LEVELS.get(record.levelname, "I")
        where = f"pytest_tfserving/bundled_server/{record.filename}:{record.lineno}"
        line = f"{stamp}.{micros:06d}: {level} {where}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_GlogFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
