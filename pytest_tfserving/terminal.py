"""Progress lines on pytest's terminal while a gate or a load run works, even while pytest
captures the test's output."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def terminal_progress(config: pytest.Config) -> Callable[[str], None] | None:
    """Progress lines on the terminal even while pytest captures the test's output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.option.verbose < -1:
        return None
    capman = config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                reporter.write_line(line)
        else:
            reporter.write_line(line)

    return write
