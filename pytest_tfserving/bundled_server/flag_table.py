"""tensorflow_model_server's command line, as the bundled server accepts it.

Every one of TF Serving's 48 flags (``model_servers/main.cc``) is parsed with its type and its
default (``model_servers/server.h``), plus one of ours, ``--bind_address``. Each flag is either
*served* (the bundled server does what TF Serving does with it), *ignored* (it cannot mean anything
here, e.g. GPU memory; accepted and logged once at start) or *rejected* (it would change what
clients see and cannot be honoured here; exit 2 with the reason). ``FLAG_TABLE`` is the one source:
the README's table is generated from it.

``--flag=value`` and ``--flag value``; booleans as ``--flag``, ``--flag=true|false``. An unknown
flag or a bad value raises ``FlagError`` (exit code 2) naming the flag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

Support = Literal["served", "ignored", "rejected"]
Kind = Literal["int", "float", "bool", "str"]


@dataclass(frozen=True)
class FlagSpec:
    kind: Kind
    default: object
    support: Support
    note: str  # what the bundled server does with it (or why not)


_CPUS = os.cpu_count() or 1

FLAG_TABLE: dict[str, FlagSpec] = {
    "port": FlagSpec("int", 8500, "served", "gRPC port; 0 turns TCP gRPC off"),
    "grpc_socket_path": FlagSpec("str", "", "served", "gRPC also on this UNIX socket"),
    "rest_api_port": FlagSpec("int", 0, "served", "REST port; 0 = REST off"),
    "rest_api_num_threads": FlagSpec("int", 4 * _CPUS, "served",
                                     "REST worker threads (requests beyond wait)"),
    "rest_api_timeout_in_ms": FlagSpec("int", 30000, "served", "REST request timeout"),
    "rest_api_enable_cors_support": FlagSpec("bool", False, "served",
                                             "CORS headers and OPTIONS preflight"),
    "enable_batching": FlagSpec("bool", False, "served", "dynamic batching"),
    "allow_version_labels_for_unavailable_models": FlagSpec(
        "bool", False, "served", "labels may name versions not yet AVAILABLE"),
    "batching_parameters_file": FlagSpec("str", "", "served", "BatchingParameters text file"),
    "enable_per_model_batching_parameters": FlagSpec(
        "bool", False, "served", "batching_params.pbtxt in a version dir overrides the file"),
    "model_config_file": FlagSpec("str", "", "served",
                                  "ModelServerConfig: models, version policies, labels"),
    "model_config_file_poll_wait_seconds": FlagSpec("int", 0, "served",
                                                    "re-read the config file; 0 = never"),
    "model_name": FlagSpec("str", "default", "served", "model name without a config file"),
    "model_base_path": FlagSpec("str", "", "served", "dir of numeric version dirs"),
    "num_load_threads": FlagSpec("int", 0, "ignored",
                                 "loads run one at a time on the manager thread (as 0)"),
    "num_unload_threads": FlagSpec("int", 0, "ignored",
                                   "unloads run on the manager thread (as 0)"),
    "max_num_load_retries": FlagSpec("int", 5, "served", "retries after a failed load"),
    "load_retry_interval_micros": FlagSpec("int", 60_000_000, "served",
                                           "wait between load retries"),
    "file_system_poll_wait_seconds": FlagSpec("int", 1, "served",
                                              "poll base paths for versions; 0 = once"),
    "flush_filesystem_caches": FlagSpec("bool", True, "ignored",
                                        "no file-system cache to flush in this process"),
    "tensorflow_session_parallelism": FlagSpec("int", 0, "served",
                                               "intra and inter-op threads of each Session"),
    "tensorflow_session_config_file": FlagSpec("str", "", "served",
                                               "ConfigProto text for each Session"),
    "tensorflow_intra_op_parallelism": FlagSpec("int", 0, "served", "intra-op threads"),
    "tensorflow_inter_op_parallelism": FlagSpec("int", 0, "served", "inter-op threads"),
    "use_alts_credentials": FlagSpec("bool", False, "rejected",
                                     "ALTS needs Google Cloud's handshaker service"),
    "ssl_config_file": FlagSpec("str", "", "served", "SSLConfig text: TLS on gRPC"),
    "platform_config_file": FlagSpec("str", "", "rejected",
                                     "custom platforms need TF Serving's C++ registry"),
    "per_process_gpu_memory_fraction": FlagSpec("float", 0.0, "ignored", "no GPU here"),
    "saved_model_tags": FlagSpec("str", "serve", "served", "MetaGraph tags to load"),
    "grpc_channel_arguments": FlagSpec("str", "", "served",
                                       "k=v,... passed to the gRPC server"),
    "grpc_max_threads": FlagSpec("int", 4 * _CPUS, "ignored",
                                 "the asyncio gRPC server has no handler thread pool"),
    "enable_model_warmup": FlagSpec("bool", True, "served",
                                    "replay assets.extra/tf_serving_warmup_requests"),
    "num_request_iterations_for_warmup": FlagSpec("int", 0, "served",
                                                  "replays of each warmup record (if > 0)"),
    "version": FlagSpec("bool", False, "served", "print the version and exit"),
    "monitoring_config_file": FlagSpec("str", "", "served", "MonitoringConfig (Prometheus)"),
    "remove_unused_fields_from_bundle_metagraph": FlagSpec(
        "bool", True, "ignored", "memory only; metadata answers are the same"),
    "prefer_tflite_model": FlagSpec("bool", False, "served",
                                    "serve model.tflite with LiteRT when present"),
    "num_tflite_pools": FlagSpec("int", _CPUS, "ignored", "one LiteRT interpreter per model"),
    "num_tflite_interpreters_per_pool": FlagSpec("int", 1, "ignored",
                                                 "one LiteRT interpreter per model"),
    "enable_signature_method_name_check": FlagSpec(
        "bool", False, "served", "Predict only on predict signatures"),
    "xla_cpu_compilation_enabled": FlagSpec(
        "bool", False, "ignored",
        "jit_compile=True functions always compile here; TF Serving fails them unless true"),
    "xla_gpu_compilation_enabled": FlagSpec("bool", False, "ignored", "no GPU here"),
    "enable_profiler": FlagSpec("bool", True, "served",
                                "TF's ProfilerService on the gRPC port"),
    "thread_pool_factory_config_file": FlagSpec("str", "", "ignored",
                                                "TF's default thread pools are used"),
    "mixed_precision": FlagSpec("str", "", "ignored", "bfloat16 rewriting is a TPU/GPU feature"),
    "skip_initialize_tpu": FlagSpec("bool", False, "ignored", "no TPU here"),
    "enable_grpc_healthcheck_service": FlagSpec("bool", False, "served",
                                                "grpc.health.v1.Health (SERVING once loaded)"),
    "enable_serialization_as_tensor_content": FlagSpec(
        "bool", False, "served", "Predict outputs in tensor_content"),
    # ours, not TF Serving's
    "bind_address": FlagSpec("str", "0.0.0.0", "served",
                             "bundled only: the address both ports bind to"),
}
TF_SERVING_FLAG_COUNT = 48
_NAME = re.compile(r"^--?([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$", re.DOTALL)


class FlagError(ValueError):
    """A command line the server cannot run with; the message is one readable line."""


@dataclass(frozen=True)
class ServerFlags:
    """The parsed command line, typed: one field per FLAG_TABLE entry (its default is there)."""

    port: int
    grpc_socket_path: str
    rest_api_port: int
    rest_api_num_threads: int
    rest_api_timeout_in_ms: int
    rest_api_enable_cors_support: bool
    enable_batching: bool
    allow_version_labels_for_unavailable_models: bool
    batching_parameters_file: str
    enable_per_model_batching_parameters: bool
    model_config_file: str
    model_config_file_poll_wait_seconds: int
    model_name: str
    model_base_path: str
    num_load_threads: int
    num_unload_threads: int
    max_num_load_retries: int
    load_retry_interval_micros: int
    file_system_poll_wait_seconds: int
    flush_filesystem_caches: bool
    tensorflow_session_parallelism: int
    tensorflow_session_config_file: str
    tensorflow_intra_op_parallelism: int
    tensorflow_inter_op_parallelism: int
    use_alts_credentials: bool
    ssl_config_file: str
    platform_config_file: str
    per_process_gpu_memory_fraction: float
    saved_model_tags: str
    grpc_channel_arguments: str
    grpc_max_threads: int
    enable_model_warmup: bool
    num_request_iterations_for_warmup: int
    version: bool
    monitoring_config_file: str
    remove_unused_fields_from_bundle_metagraph: bool
    prefer_tflite_model: bool
    num_tflite_pools: int
    num_tflite_interpreters_per_pool: int
    enable_signature_method_name_check: bool
    xla_cpu_compilation_enabled: bool
    xla_gpu_compilation_enabled: bool
    enable_profiler: bool
    thread_pool_factory_config_file: str
    mixed_precision: str
    skip_initialize_tpu: bool
    enable_grpc_healthcheck_service: bool
    enable_serialization_as_tensor_content: bool
    bind_address: str
    given: frozenset[str] = frozenset()  # the flags named on the command line

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.saved_model_tags.split(",") if t.strip())

    @property
    def warmup_iterations(self) -> int:
        """TF Serving replays each record once unless the flag is > 0."""
        return max(1, self.num_request_iterations_for_warmup)

    @property
    def intra_inter_threads(self) -> tuple[int, int]:
        """(intra, inter) for each Session: the per-pool flags, else session parallelism."""
        if self.tensorflow_intra_op_parallelism or self.tensorflow_inter_op_parallelism:
            return self.tensorflow_intra_op_parallelism, self.tensorflow_inter_op_parallelism
        p = self.tensorflow_session_parallelism
        return p, p

    def ignored_given(self) -> list[str]:
        """One line per flag named on the command line that has no effect here."""
        return [f"--{name} is accepted and has no effect in the bundled server: "
                f"{FLAG_TABLE[name].note}"
                for name in sorted(self.given) if FLAG_TABLE[name].support == "ignored"]


def markdown_table() -> str:
    """The README's flag table (regenerate: python -m <this module>)."""
    rows = ["| flag | type | default | bundled server |", "|---|---|---|---|"]
    for name, spec in FLAG_TABLE.items():
        default = spec.default if name not in ("rest_api_num_threads", "grpc_max_threads",
                                                "num_tflite_pools") else "(from CPUs)"
        shown = f"`{default}`" if default != "" else '`""`'
        rows.append(f"| `--{name}` | {spec.kind} | {shown} | {spec.support}: {spec.note} |")
    return "\n".join(rows)


def supported_flags() -> str:
    return ", ".join(f"--{name}" for name in FLAG_TABLE)


def _bad(message: str) -> FlagError:
    return FlagError(f"{message}. Supported flags: {supported_flags()}")


def _convert(name: str, kind: Kind, raw: str) -> object:
    if kind == "bool":
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise _bad(f"Invalid value {raw!r} for --{name}: expected true or false")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise _bad(f"Invalid value {raw!r} for --{name}: expected an integer") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise _bad(f"Invalid value {raw!r} for --{name}: expected a number") from None
    return raw


def _tokens(argv: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        m = _NAME.match(arg)
        if not m:
            raise _bad(f"Unexpected argument {arg!r}: flags look like --name=value")
        name, raw = m.group(1), m.group(2)
        if name not in FLAG_TABLE:
            raise _bad(f"Unknown flag --{name}")
        kind = FLAG_TABLE[name].kind
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
    return values


def _check(flags: ServerFlags) -> None:
    """The combinations TF Serving refuses (Server::BuildAndStart), and ours."""
    for name in sorted(flags.given):
        spec = FLAG_TABLE[name]
        if spec.support == "rejected" and getattr(flags, name) != spec.default:
            raise _bad(f"--{name} cannot be honoured by the bundled server: {spec.note}")
    if flags.version:
        return
    if flags.port == 0 and not flags.grpc_socket_path:
        raise _bad("At least one of --port or --grpc_socket_path must be set")
    if not flags.model_base_path and not flags.model_config_file:
        raise _bad("Missing --model_base_path (a dir of numeric version subdirs) or "
                   "--model_config_file")
    for port_flag in ("port", "rest_api_port"):
        value = int(getattr(flags, port_flag))
        if not 0 <= value <= 65535:
            raise _bad(f"Invalid value for --{port_flag}: {value} (0-65535)")
    if flags.rest_api_port and flags.rest_api_port == flags.port:
        raise _bad(f"--rest_api_port cannot be the same as --port ({flags.port})")
    if flags.batching_parameters_file and not flags.enable_batching:
        raise _bad("--batching_parameters_file is set without --enable_batching=true "
                   "(TF Serving refuses this too)")
    if (flags.tensorflow_intra_op_parallelism > 0 and flags.tensorflow_inter_op_parallelism > 0
            and flags.tensorflow_session_parallelism > 0):
        raise _bad("Either configure --tensorflow_session_parallelism or "
                   "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
                   "separately, not all three")
    for name in ("rest_api_num_threads", "rest_api_timeout_in_ms", "max_num_load_retries"):
        if int(getattr(flags, name)) < (1 if name == "rest_api_num_threads" else 0):
            raise _bad(f"Invalid value for --{name}: {getattr(flags, name)}")
    if not flags.tags:
        raise _bad(f"--saved_model_tags={flags.saved_model_tags!r} names no tag")
    parse_channel_arguments(flags.grpc_channel_arguments)


def parse_flags(argv: list[str]) -> ServerFlags:
    """Parse tensorflow_model_server's flags; raises FlagError naming the flag at fault."""
    values = _tokens(argv)
    known = {f.name for f in fields(ServerFlags)}
    assert set(FLAG_TABLE) <= known
    defaults = {name: spec.default for name, spec in FLAG_TABLE.items()}
    flags = ServerFlags(**{**defaults, **values}, given=frozenset(values))  # type: ignore[arg-type]
    _check(flags)
    return flags


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb`` as gRPC server options:
    integer values as integers (TF Serving's SimpleAtoi rule), the rest as strings."""
    out: list[tuple[str, int | str]] = []
    for item in (p for p in text.split(",") if p.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _bad(f"--grpc_channel_arguments entry {item!r} is not key=value")
        try:
            out.append((key.strip(), int(value)))
        except ValueError:
            out.append((key.strip(), value))
    return out


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


if __name__ == "__main__":
    print(markdown_table())
