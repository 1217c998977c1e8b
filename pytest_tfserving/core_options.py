"""The run's own options: what is under gate, where it is served, which gates run, where the
report and plots go, and which signatures the gates look at."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_tfserving import option_parsers as p
from pytest_tfserving.errors import ConfigError, TFServingError
from pytest_tfserving.option_spec import option

if TYPE_CHECKING:
    from pytest_tfserving.model import ModelInfo

BACKENDS = ("auto", "docker", "binary", "bundled", "remote")
# Flags every launcher sets itself (where it listens, what it serves): not for --tfs-server-arg.
LAUNCHER_FLAGS = ("port", "rest_api_port", "model_name", "model_base_path", "model_config_file")


def gate_names(raw: str) -> tuple[str, ...] | str:
    """'all' -> 'all'; 'none' or '' -> (); else the named gates, each checked against the
    registry."""
    from pytest_tfserving.gates.registry import GATES

    words = raw.replace(",", " ").split()
    if words == ["all"]:
        return "all"
    if not words or words == ["none"]:
        return ()
    known = [g.name for g in GATES]
    unknown = [w for w in words if w not in known]
    if unknown:
        raise ValueError(f"unknown gate(s) {', '.join(unknown)}; known: all, none, "
                         f"{', '.join(known)}")
    return tuple(words)


def server_arg(raw: str) -> str:
    """One tensorflow_model_server flag, ``--name`` or ``--name=value``, passed as is."""
    name = raw[2:].partition("=")[0]
    if not raw.startswith("--") or not name or not name.replace("_", "").isalnum():
        raise ValueError("expected one tensorflow_model_server flag as --name or --name=value, "
                         "given with '=' (e.g. --tfs-server-arg=--file_system_poll_wait_"
                         "seconds=0)")
    if name in LAUNCHER_FLAGS:
        raise ValueError(f"--{name} is set by the launcher itself (ports and what to serve); "
                         "use --tfs-model / --tfs-model-config to choose what is served")
    return raw


@dataclass(frozen=True)
class CoreOptions:
    """Model, model config, backend choice, server sizing, gates, report and plots."""

    model: Path | None = option(
        "model", None, p.path, "SavedModel to gate: TF Serving base dir (numeric version "
        "subdirs) or one version dir. Enables the default gate suite.", metavar="PATH",
        marker="")
    model_name: str | None = option(
        "model_name", None, p.text, "Model name served and requested (default: the model dir's "
        "name); with --tfs-model-config, the model of the config under gate.", metavar="NAME",
        marker="")
    backend: str = option(
        "backend", "auto", p.choice(*BACKENDS), "Where TF Serving runs: auto (docker if an "
        "engine and image are there, else tensorflow_model_server on PATH, else bundled), "
        "docker, binary, bundled, remote.", marker="")
    report: Path | None = option(
        "report", None, p.path, "Write the gate results as JSON to PATH.", metavar="PATH",
        marker="")
    start_timeout: float = option(
        "start_timeout", 120.0, p.positive_float, "Seconds until the server must report the "
        "model AVAILABLE.", metavar="SECONDS", marker="")
    intra_op_threads: int = option(
        "intra_op_threads", 0, p.non_negative_int, "--tensorflow_intra_op_parallelism for the "
        "server (0 = TF default: number of cores).", metavar="N", marker="")
    inter_op_threads: int = option(
        "inter_op_threads", 0, p.non_negative_int, "--tensorflow_inter_op_parallelism for the "
        "server (0 = TF default).", metavar="N", marker="")
    gates: tuple[str, ...] | str = option(
        "gates", "all", gate_names, "Default gates to run: 'all' (default), 'none', or a "
        "comma-separated list such as serving,no_string_ops.", metavar="NAMES", marker="")
    model_config: Path | None = option(
        "model_config", None, p.existing_file, "Gate a deployment as it runs: its TF Serving "
        "--model_config_file (text ModelServerConfig). Every model in it is served; "
        "--tfs-model-name picks the model under gate (the version its policy serves), and "
        "--tfs-model, if given, is the candidate that takes that model's base_path. Enables the "
        "default gate suite.", metavar="FILE", marker="")
    server_args: tuple[str, ...] = option(
        "server_arg", None, server_arg, "Extra tensorflow_model_server flag, appended as is "
        "(repeatable; give it with '=': --tfs-server-arg=--allow_version_labels_for_unavailable_"
        "models).", metavar="--FLAG[=VALUE]", multiple=True, split_commas=False, marker="")
    baseline_model: Path | None = option(
        "baseline_model", None, p.path, "Production baseline SavedModel: the SLA gate runs the "
        "same load against it in the same session and compares.", metavar="PATH", marker="")
    inconclusive: str = option(
        "inconclusive", "fail", p.choice("fail", "warn"), "What a gate that measured but could "
        "not decide at the required confidence (verdict INCONCLUSIVE) does to the release: fail "
        "it (default) or warn and let it pass.", metavar="fail|warn", marker="")
    plot: Path | None = option(
        "plot", None, p.path, "Write latency plots (PNG) into DIR: percentiles, and latency vs "
        "throughput from a short extra rate sweep per SLA gate (needs matplotlib).",
        metavar="DIR", marker="")

    @property
    def active(self) -> bool:
        """True when a model is under gate (the default suite and fixtures are live)."""
        return self.model is not None or self.model_config is not None

    def check_model(self, model: ModelInfo, sources: Mapping[str, str]) -> None:
        """The baseline is a readable model (the candidate itself is read by the session)."""
        if self.baseline_model is None:
            return
        from pytest_tfserving.model import inspect_model

        try:
            inspect_model(self.baseline_model, model.name)
        except (TFServingError, OSError) as exc:
            raise ConfigError(f"--tfs-baseline-model={self.baseline_model} (from "
                              f"{sources.get('baseline_model')}) cannot be read as a model: "
                              f"{exc}") from None


@dataclass(frozen=True)
class SignatureSelection:
    """Which signatures the per-signature gates look at (marker keyword ``signatures=``)."""

    signatures: tuple[str, ...] = option(
        "signatures", (), p.names, "Signatures under gate (default: every predict/classify/"
        "regress signature).", metavar="NAMES")

    def check_model(self, model: ModelInfo, sources: Mapping[str, str]) -> None:
        require_signatures(model, self.signatures, "--tfs-signatures",
                           sources.get("signatures", "default"))


def require_signatures(model: ModelInfo, names: Iterable[str | None], flag: str,
                       source: str) -> None:
    """Each named signature exists in the model, else one error naming what exists."""
    unknown = [name for name in names if name and name not in model.signatures]
    if unknown:
        known = ", ".join(sorted(model.signatures)) or "(none)"
        raise ConfigError(f"{flag}: signature(s) {', '.join(unknown)} do not exist in "
                          f"{model.version_dir} (from {source}); it has: {known}.")
