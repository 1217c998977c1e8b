"""What every gate returns: a verdict with its threshold, measurements and a readable message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate on one model (and one server, for served gates).

    ``threshold`` and ``measured`` are JSON-ready dicts; the report prints them and CI scripts
    read them from the JSON report, so keep their keys stable once released.
    """

    name: str
    passed: bool
    threshold: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    skipped: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    target: str = ""  # what was gated when a gate runs more than once (image, baseline, marker)
    # Measured, but not enough to decide at the required confidence. ``passed`` then says what
    # the release makes of it (--tfs-inconclusive=warn: True; fail, the default: False).
    inconclusive: bool = False

    @property
    def verdict(self) -> str:
        """PASS, FAIL, SKIP or INCONCLUSIVE."""
        if self.skipped:
            return "SKIP"
        if self.inconclusive:
            return "INCONCLUSIVE"
        return "PASS" if self.passed else "FAIL"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        """The inverse of ``as_dict`` (results travel from xdist workers as dicts)."""
        return cls(name=data["name"], passed=data["passed"], threshold=data.get("threshold", {}),
                   measured=data.get("measured", {}), message=data.get("message", ""),
                   skipped=data.get("skipped", False), details=data.get("details", {}),
                   target=data.get("target", ""),
                   inconclusive=data.get("verdict") == "INCONCLUSIVE")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "verdict": self.verdict,
            "passed": self.passed,
            "skipped": self.skipped,
            "threshold": self.threshold,
            "measured": self.measured,
            "message": self.message,
        }
        if self.target:
            out["target"] = self.target
        if self.details:
            out["details"] = self.details
        return out
