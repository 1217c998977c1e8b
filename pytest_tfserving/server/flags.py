"""tensorflow_model_server's command line, as the bundled server accepts it.

Same flag names and meanings; ``--flag=value`` and ``--flag value``; booleans as ``--flag``,
``--flag=true|false``. An unknown flag or a bad value raises ``FlagError`` (exit code 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# name -> (kind, default, help)
_FLAGS: dict[str, tuple[str, object, str]] = {
    "port": ("int", 8500, "gRPC port (TF Serving default 8500)"),
    "rest_api_port": ("int", 0, "REST port; 0 = REST off"),
    "model_name": ("str", "default", "name of the served model"),
    "model_base_path": ("str", "", "dir of numeric version subdirs (required)"),
    "enable_batching": ("bool", False, "dynamic batching"),
    "batching_parameters_file": ("str", "", "BatchingParameters text file"),
    "tensorflow_intra_op_parallelism": ("int", 0, "intra-op threads (0 = TF default)"),
    "tensorflow_inter_op_parallelism": ("int", 0, "inter-op threads (0 = TF default)"),
    "monitoring_config_file": ("str", "", "MonitoringConfig text file (prometheus_config)"),
    "enable_model_warmup": ("bool", True, "replay assets.extra/tf_serving_warmup_requests"),
    "num_request_iterations_for_warmup": ("int", 1, "replays of each warmup record"),
    "prefer_tflite_model": ("bool", False, "serve model.tflite with LiteRT when present"),
    "rest_api_timeout_in_ms": ("int", 30000, "REST request timeout"),
    "file_system_poll_wait_seconds": ("int", 1, "accepted; the bundled server never reloads"),
    "bind_address": ("str", "0.0.0.0", "bundled only: address both ports bind to"),
}
_NAME = re.compile(r"^--?([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$", re.DOTALL)


class FlagError(ValueError):
    """A command line the server cannot run with; the message is one readable line."""


@dataclass(frozen=True)
class ServerFlags:
    port: int = 8500
    rest_api_port: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    enable_batching: bool = False
    batching_parameters_file: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    monitoring_config_file: str = ""
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    prefer_tflite_model: bool = False
    rest_api_timeout_in_ms: int = 30000
    file_system_poll_wait_seconds: int = 1
    bind_address: str = "0.0.0.0"


def supported_flags() -> str:
    return ", ".join(f"--{name}" for name in _FLAGS)


def _bad(message: str) -> FlagError:
    return FlagError(f"{message}. Supported flags: {supported_flags()}")


def _convert(name: str, kind: str, raw: str) -> object:
    if kind == "bool":
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise _bad(f"Invalid value {raw!r} for --{name}: expected true or false")
    if kind == "int":
        try:
            value = int(raw)
        except ValueError:
            raise _bad(f"Invalid value {raw!r} for --{name}: expected an integer") from None
        if value < 0:
            raise _bad(f"Invalid value {raw!r} for --{name}: must be >= 0")
        return value
    return raw


def parse_flags(argv: list[str]) -> ServerFlags:
    """Parse tensorflow_model_server's flags; raises FlagError naming the flag at fault."""
    values: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        m = _NAME.match(arg)
        if not m:
            raise _bad(f"Unexpected argument {arg!r}: flags look like --name=value")
        name, raw = m.group(1), m.group(2)
        if name not in _FLAGS:
            raise _bad(f"Unknown flag --{name}")
        kind = _FLAGS[name][0]
        if raw is None:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if kind == "bool":
                if nxt is not None and nxt.lower() in ("true", "false"):
                    raw, i = nxt, i + 1
                else:
                    raw = "true"
            else:
                if nxt is None or nxt.startswith("--"):
                    raise _bad(f"Flag --{name} needs a value")
                raw, i = nxt, i + 1
        values[name] = _convert(name, kind, raw)
        i += 1
    flags = ServerFlags(**values)  # type: ignore[arg-type]
    if not flags.model_base_path:
        raise _bad("Missing --model_base_path (a dir of numeric version subdirs)")
    for port_flag in ("port", "rest_api_port"):
        if int(getattr(flags, port_flag)) > 65535:
            raise _bad(f"Invalid value for --{port_flag}: {getattr(flags, port_flag)} > 65535")
    if flags.num_request_iterations_for_warmup < 1:
        raise _bad("Invalid value for --num_request_iterations_for_warmup: must be >= 1")
    return flags


@dataclass(frozen=True)
class MonitoringConfig:
    prometheus_enabled: bool = False
    prometheus_path: str = "/monitoring/prometheus/metrics"  # TF Serving's kPrometheusPath


_PROM_BLOCK = re.compile(r"prometheus_config\s*:?\s*\{(?P<body>[^}]*)\}", re.DOTALL)
_ENABLE = re.compile(r"\benable\s*:\s*(\w+)")
_PATH = re.compile(r"\bpath\s*:\s*\"([^\"]*)\"")


def parse_monitoring_config(text: str, source: str) -> MonitoringConfig:
    """``prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }``."""
    stripped = re.sub(r"#[^\n]*", "", text).strip()
    if not stripped:
        return MonitoringConfig()
    m = _PROM_BLOCK.search(stripped)
    if not m:
        raise FlagError(
            f"Cannot parse --monitoring_config_file {source}: expected "
            "'prometheus_config { enable: true, path: \"/monitoring/prometheus/metrics\" }'"
        )
    body = m.group("body")
    enabled = False
    if em := _ENABLE.search(body):
        if em.group(1) not in ("true", "false"):
            raise FlagError(f"--monitoring_config_file {source}: enable must be true or false, "
                            f"got {em.group(1)!r}")
        enabled = em.group(1) == "true"
    path = MonitoringConfig.prometheus_path
    if pm := _PATH.search(body):
        path = pm.group(1) or path
    if not path.startswith("/"):
        raise FlagError(f"--monitoring_config_file {source}: path must start with '/', "
                        f"got {path!r}")
    return MonitoringConfig(prometheus_enabled=enabled, prometheus_path=path)


def read_monitoring_config(path: str) -> MonitoringConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise FlagError(f"Cannot read --monitoring_config_file {path!r}: {exc}") from None
    return parse_monitoring_config(text, path)
