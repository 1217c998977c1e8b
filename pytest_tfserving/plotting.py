"""matplotlib for ``--tfs-plot``, imported only when a plot is drawn (headless backend), with a
usage error naming the extra to install when it is missing."""

from __future__ import annotations

from typing import Any

from pytest_tfserving.errors import ConfigError


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--tfs-plot needs matplotlib: pip install 'pytest-tfserving[plots]' "
                          "(or drop --tfs-plot).") from exc
    return plt
