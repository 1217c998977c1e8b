"""Every ``--tfs-*`` option in one table, and the one place that resolves it.

Each option has a command-line flag ``--tfs-NAME``, an ini key ``tfs_NAME`` and an environment
variable ``TFS_NAME``; precedence is command line > env > ini > default. A value that does not
parse raises ``pytest.UsageError`` naming the value, where it came from, and what would be valid.

Feature modules add their options to ``OPTIONS`` in their own section below; nothing here
imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Option:
    name: str  # snake_case; --tfs-<dashed>, tfs_<name>, TFS_<NAME>
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    metavar: str | None = None
    multiple: bool = False  # repeatable flag; env/ini values split on commas/whitespace
    split_commas: bool = True  # multiple: env/ini values split on commas too (else whitespace)

    @property
    def flag(self) -> str:
        return "--tfs-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "tfs_" + self.name

    @property
    def env(self) -> str:
        return "TFS_" + self.name.upper()

    @property
    def dest(self) -> str:
        return "tfs_" + self.name


@dataclass(frozen=True)
class Resolved:
    value: Any
    source: str  # "command line --tfs-x", "env TFS_X", "ini tfs_x", "default"


# --- parsers: raise ValueError(reason); the resolver adds value and source ---------------------

def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def parse_non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise ValueError("must be a number >= 0")
    return value


def parse_non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def parse_fraction(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError("must be a fraction between 0 and 1")
    return value


def parse_int_list(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in raw.replace(",", " ").split())


def parse_gate_names(raw: str) -> tuple[str, ...] | str:
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


# Flags every launcher sets itself (where it listens, what it serves): not for --tfs-server-arg.
LAUNCHER_FLAGS = ("port", "rest_api_port", "model_name", "model_base_path", "model_config_file")


def parse_server_arg(raw: str) -> str:
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


def choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw

    return parse


def parse_path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must be a non-empty path")
    return Path(raw).expanduser()


def parse_existing_file(raw: str) -> Path:
    path = parse_path(raw)
    if not path.is_file():
        raise ValueError("no such file")
    return path


# --- the table -----------------------------------------------------------------------------------

OPTIONS: dict[str, Option] = {}


def register(*options: Option) -> None:
    for option in options:
        if option.name in OPTIONS:
            raise ValueError(f"option {option.flag} registered twice")
        OPTIONS[option.name] = option


# Core: model, backend, report, server sizing.
register(
    Option("model", "SavedModel to gate: TF Serving base dir (numeric version subdirs) or one "
           "version dir. Enables the default gate suite.", parse_path, metavar="PATH"),
    Option("model_name", "Model name served and requested (default: the model dir's name); "
           "with --tfs-model-config, the model of the config under gate.",
           metavar="NAME"),
    Option("backend", "Where TF Serving runs: auto (docker if an engine and image are there, "
           "else tensorflow_model_server on PATH, else bundled), docker, binary, bundled, remote.",
           choice("auto", "docker", "binary", "bundled", "remote"), default="auto"),
    Option("report", "Write the gate results as JSON to PATH.", parse_path, metavar="PATH"),
    Option("start_timeout", "Seconds until the server must report the model AVAILABLE.",
           parse_positive_float, default=120.0, metavar="SECONDS"),
    Option("intra_op_threads", "--tensorflow_intra_op_parallelism for the server "
           "(0 = TF default: number of cores).", parse_non_negative_int, default=0, metavar="N"),
    Option("inter_op_threads", "--tensorflow_inter_op_parallelism for the server (0 = TF "
           "default).", parse_non_negative_int, default=0, metavar="N"),
    Option("gates", "Default gates to run: 'all' (default), 'none', or a comma-separated list "
           "such as serving,no_string_ops.", lambda raw: parse_gate_names(raw), default="all",
           metavar="NAMES"),
    Option("model_config", "Gate a deployment as it runs: its TF Serving --model_config_file "
           "(text ModelServerConfig). Every model in it is served; --tfs-model-name picks the "
           "model under gate (the version its policy serves), and --tfs-model, if given, is the "
           "candidate that takes that model's base_path. Enables the default gate suite.",
           parse_existing_file, metavar="FILE"),
    Option("server_arg", "Extra tensorflow_model_server flag, appended as is (repeatable; give "
           "it with '=': --tfs-server-arg=--allow_version_labels_for_unavailable_models).",
           parse_server_arg, metavar="--FLAG[=VALUE]", multiple=True, split_commas=False),
    Option("signatures", "Signatures under gate (default: every predict/classify/regress "
           "signature).", lambda raw: tuple(x for x in raw.replace(",", " ").split()),
           metavar="NAMES"),
)

# Dynamic batching: a BatchingParameters file and/or one key per field (fields override file).
register(
    Option("batching", "Serve with dynamic batching (--enable_batching).", parse_bool,
           default=True, metavar="on|off"),
    Option("batching_file", "TF Serving BatchingParameters text file (--batching_parameters_"
           "file).", parse_existing_file, metavar="PATH"),
    Option("max_batch_size", "BatchingParameters.max_batch_size.", parse_positive_int,
           metavar="N"),
    Option("batch_timeout_micros", "BatchingParameters.batch_timeout_micros.",
           parse_non_negative_int, metavar="US"),
    Option("max_enqueued_batches", "BatchingParameters.max_enqueued_batches.",
           parse_positive_int, metavar="N"),
    Option("num_batch_threads", "BatchingParameters.num_batch_threads (0 = cores).",
           parse_non_negative_int, metavar="N"),
    Option("allowed_batch_sizes", "BatchingParameters.allowed_batch_sizes, e.g. 8,16,32.",
           parse_int_list, metavar="SIZES"),
    Option("pad_variable_length_inputs", "BatchingParameters.pad_variable_length_inputs.",
           parse_bool, metavar="BOOL"),
)


# --- registration and resolution -------------------------------------------------------------

def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("tfserving", "TF Serving release gate (pytest-tfserving)")
    for option in OPTIONS.values():
        help_text = f"{option.help} [env {option.env}, ini {option.ini}]"
        if option.default is not None:
            help_text += f" (default: {option.default})"
        group.addoption(
            option.flag, dest=option.dest, default=None, metavar=option.metavar,
            action="append" if option.multiple else "store",
            help=help_text.replace("%", "%%"),  # argparse %-formats help strings
        )
        parser.addini(option.ini, help=option.help, default=None)


def was_given(config: pytest.Config, name: str) -> bool:
    return resolve(config, name).source != "default"


def resolve(config: pytest.Config, name: str) -> Resolved:
    """The value of option ``name``: command line > env > ini > default."""
    option = OPTIONS[name]
    raw_cli = config.getoption(option.dest, default=None)
    if raw_cli is not None:
        source = f"command line {option.flag}"
        if option.multiple:
            return Resolved(tuple(_parse(option, r, source) for r in raw_cli), source)
        return Resolved(_parse(option, raw_cli, source), source)
    env = os.environ.get(option.env)
    if env is not None and env.strip() != "":
        return Resolved(_parse_maybe_many(option, env, f"env {option.env}"), f"env {option.env}")
    ini = config.getini(option.ini)
    if ini not in (None, "", []):
        ini_text = " ".join(ini) if isinstance(ini, list) else str(ini)
        source = f"ini {option.ini} in {config.inipath or 'ini file'}"
        return Resolved(_parse_maybe_many(option, ini_text, source), source)
    default = option.default
    if option.multiple and default is None:
        default = ()
    return Resolved(default, "default")


def value(config: pytest.Config, name: str) -> Any:
    return resolve(config, name).value


def _parse_maybe_many(option: Option, raw: str, source: str) -> Any:
    if option.multiple:
        text = raw.replace(",", " ") if option.split_commas else raw
        return tuple(_parse(option, part, source) for part in text.split())
    return _parse(option, raw, source)


def _parse(option: Option, raw: str, source: str) -> Any:
    try:
        return option.parse(raw.strip())
    except (ValueError, TypeError) as exc:
        reason = str(exc) or type(exc).__name__
        raise pytest.UsageError(
            f"Invalid value {raw!r} for {option.flag} from {source}: {reason}. "
            f"{option.help}"
        ) from None


def usage_error(message: str, sources: Sequence[str] = ()) -> pytest.UsageError:
    where = f" (from {', '.join(sources)})" if sources else ""
    return pytest.UsageError(message + where)


# Warmup gate (issue 7): cold-start limit and measurement size. Default 5x: on the fixture
# models (bundled server, 2 busy cores, 22 runs) first/p50 was 0.87-2.71x with warmup and
# 11-90x without; 5x sits near the geometric middle of 2.71 and 11.35.
register(
    Option("warmup_max_cold_ratio", "Warmup gate: the first request on a fresh server may take "
           "at most this many times the steady-state p50.", parse_positive_float, default=5.0,
           metavar="RATIO"),
    Option("warmup_steady_requests", "Warmup gate: requests after the first whose p50 is the "
           "steady state.", parse_positive_int, default=50, metavar="N"),
    Option("warmup_compare", "Warmup gate: also start a server with --enable_model_warmup=false "
           "and report its first-request ratio (the effect of the warmup file).", parse_bool,
           default=False, metavar="BOOL"),
)


# INT8 gate (issue 6): eval data, quantization, metric and change bounds, INT8 serving.
register(
    Option("eval_data", "Eval set for the int8_delta gate: .npz with arrays named after the "
           "signature's inputs plus labels (or override the tfs_eval_data fixture).", parse_path,
           metavar="FILE.npz"),
    Option("int8_model", "int8_delta gate: use this INT8 .tflite instead of quantizing the "
           "SavedModel.", parse_path, metavar="FILE.tflite"),
    Option("int8_metric", "int8_delta gate metric: auto, accuracy, top_k_accuracy, auc, mae, "
           "rmse; label-free: agreement, max_abs_diff, mean_abs_diff, cosine; or module:function "
           "(fn(target, predictions) -> float).", default="auto", metavar="NAME"),
    Option("int8_max_delta", "int8_delta gate: largest allowed absolute worsening of the metric "
           "from float to INT8 (default 0.01 for accuracy-like metrics).",
           parse_non_negative_float, metavar="DELTA"),
    Option("int8_max_rel_delta", "int8_delta gate: largest allowed relative worsening (fraction "
           "of the float value; default 0.05 for mae/rmse).", parse_non_negative_float,
           metavar="FRACTION"),
    Option("int8_direction", "int8_delta gate: whether higher or lower metric values are better "
           "(auto: the metric's own; custom metrics: higher).", choice("auto", "higher", "lower"),
           default="auto"),
    Option("int8_samples", "int8_delta gate: representative (calibration) samples.",
           parse_positive_int, default=200, metavar="N"),
    Option("int8_calibration", "int8_delta gate: calibration data: auto (eval data, else warmup "
           "records, else synthesized), eval, warmup, synthesized.",
           choice("auto", "eval", "warmup", "synthesized"), default="auto"),
    Option("int8_batch_size", "int8_delta gate: batch size for evaluation and timing.",
           parse_positive_int, default=32, metavar="N"),
    Option("int8_signature", "int8_delta gate: signature to quantize (default serving_default).",
           metavar="NAME"),
    Option("int8_output", "int8_delta gate: output the metric reads (default: class scores, else "
           "the first float output).", metavar="NAME"),
    Option("int8_top_k", "int8_delta gate: k for top_k_accuracy.", parse_positive_int,
           default=5, metavar="K"),
    Option("int8_label_key", "int8_delta gate: name of the labels array in the eval data.",
           default="labels", metavar="NAME"),
    Option("int8_serve", "Serve the INT8 model (model.tflite in a staged copy, "
           "--prefer_tflite_model) for the served gates.", parse_bool, default=False,
           metavar="BOOL"),
)


# String-op and direct-tensor gates (issue 5). Allowlists: entries separated by ';' or newlines.
def _string_op_allow(raw: str) -> Any:
    from pytest_tfserving.graph import parse_allowlist

    return parse_allowlist(raw, "op")


def _string_input_allow(raw: str) -> Any:
    from pytest_tfserving.graph import parse_allowlist

    return parse_allowlist(raw, "input")


register(
    Option("string_op_allow", "no_string_ops gate allowlist: 'OpType=reason' (op type glob) or "
           "'glob:node/name/*=reason' (node name glob), entries separated by ';' or newlines; "
           "the reason is shown in the report.", _string_op_allow, metavar="ENTRIES"),
    Option("string_input_allow", "direct_tensor_inputs gate allowlist: 'input=reason' or "
           "'signature/input=reason' (globs), entries separated by ';' or newlines.",
           _string_input_allow, metavar="ENTRIES"),
    Option("max_string_time_share", "no_string_ops gate: largest share of traced compute time "
           "allowed in string ops (the playbook alerts above 5%).", parse_fraction,
           default=0.05, metavar="FRACTION"),
    Option("string_time", "no_string_ops gate: measure the string-op time share by running the "
           "signature traced in-process: auto (only when string ops are found), on, off.",
           choice("auto", "on", "off"), default="auto", metavar="auto|on|off"),
)


# SLA gate and load generator (issue 4). The defaults suit the demo CTR model on a 2-core machine
# with the bundled server: 300 req/s Poisson arrivals of batch-1 requests (dynamic batching has work
# to merge) with p99 <= 25 ms; give your production numbers (the playbook's: --tfs-sla-min-qps=800
# --tfs-sla-p99-ms=20) in the ini file.
register(
    Option("sla_p99_ms", "SLA gate: p99 latency limit in ms, measured from each request's intended "
           "send time (open loop).", parse_positive_float, default=25.0, metavar="MS"),
    Option("sla_min_qps", "SLA gate: the offered open-loop rate in req/s ('at N QPS, p99 <= X'); "
           "the server must answer at least 95 % of it. With --tfs-sla-concurrency: the minimum "
           "achieved throughput.", parse_positive_float, default=300.0, metavar="QPS"),
    Option("sla_max_error_rate", "SLA gate: largest allowed share of failed requests.",
           parse_fraction, default=0.001, metavar="FRACTION"),
    Option("sla_duration", "SLA gate: measured seconds (3 windows); windows repeat until 3 "
           "consecutive ones agree (--tfs-sla-stability-pct).", parse_positive_float,
           default=6.0, metavar="SECONDS"),
    Option("sla_warmup", "SLA gate: seconds of load before measuring (excluded).",
           parse_non_negative_float, default=2.0, metavar="SECONDS"),
    Option("sla_concurrency", "SLA gate: closed loop with N callers instead of a fixed rate "
           "(0 = open loop).", parse_non_negative_int, default=0, metavar="N"),
    Option("sla_arrival", "SLA gate: open-loop arrivals: poisson (production-like) or constant.",
           choice("poisson", "constant"), default="poisson"),
    Option("sla_stability_pct", "SLA gate: windows agree when p99 and throughput of 3 in a row "
           "are within this % (perf_analyzer's rule); 0 = measure --tfs-sla-duration once.",
           parse_non_negative_float, default=10.0, metavar="PCT"),
    Option("sla_max_windows", "SLA gate: stop after this many windows even if never stable.",
           parse_positive_int, default=10, metavar="N"),
    Option("sla_require_stable", "SLA gate: fail when the windows never agree (default: report "
           "it only).", parse_bool, default=False, metavar="BOOL"),
    Option("sla_workers", "Load generator processes (0 = as the rate needs, at most one per "
           "core).", parse_non_negative_int, default=0, metavar="N"),
    Option("sla_batch_size", "SLA gate: examples per request (warmup records and .npz rows are "
           "re-cut to it; 0 = warmup records as they are).", parse_non_negative_int, default=1,
           metavar="N"),
    Option("sla_requests", "SLA gate: .npz with arrays named after the signature's inputs; rows "
           "become requests (default: warmup records, else synthesized).", parse_existing_file,
           metavar="FILE.npz"),
    Option("sla_signature", "SLA gate: signature to load (default serving_default, else the "
           "first served).", metavar="NAME"),
    Option("sla_timeout", "SLA gate: per-request deadline in seconds (a request past it counts "
           "as DEADLINE_EXCEEDED).", parse_positive_float, default=5.0, metavar="SECONDS"),
    Option("baseline_model", "Production baseline SavedModel: the SLA gate runs the same load "
           "against it in the same session and compares.", parse_path, metavar="PATH"),
    Option("sla_max_p99_regression_pct", "SLA gate with a baseline: largest allowed p99 increase "
           "over the baseline, in %.", parse_non_negative_float, default=10.0, metavar="PCT"),
    Option("sla_max_qps_regression_pct", "SLA gate with a baseline: largest allowed drop of "
           "achieved throughput below the baseline's, in %.", parse_non_negative_float,
           default=5.0, metavar="PCT"),
    Option("plot", "Write latency plots (PNG) into DIR: percentiles, and latency vs throughput "
           "from a short extra rate sweep per SLA gate (needs matplotlib).", parse_path,
           metavar="DIR"),
)


# Where TF Serving runs: docker, binary, remote (issue 3). Parsers live beside the launchers.
def _backend_parsers() -> dict[str, Callable[[str], Any]]:
    from pytest_tfserving.launchers import backend_settings as b

    return {"memory": b.parse_memory, "env": b.parse_env_pair, "target": b.parse_host_port,
            "rest": b.parse_rest_address}


_BP = _backend_parsers()
register(
    Option("image", "docker backend: TF Serving image; repeat to gate several tags (default: "
           "the pinned official tensorflow/serving:2.19.0).", metavar="IMAGE", multiple=True),
    Option("pull", "docker backend: pull the image never, when missing, or always.",
           choice("never", "missing", "always"), default="missing", metavar="never|missing|always"),
    Option("cpus", "docker backend: CPU limit of the container (e.g. 2 or 0.5), so SLA figures "
           "reflect production sizing.", parse_positive_float, metavar="N"),
    Option("memory", "docker backend: memory limit of the container (e.g. 2g).", _BP["memory"],
           metavar="SIZE"),
    Option("env", "docker/binary backend: KEY=VALUE in the server's environment (repeatable), "
           "e.g. LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4.", _BP["env"],
           metavar="KEY=VALUE", multiple=True),
    Option("binary", "binary backend: path of tensorflow_model_server (default: from PATH).",
           parse_path, metavar="PATH"),
    Option("target", "remote backend: gRPC HOST:PORT of an already running TF Serving (nothing "
           "is launched).", _BP["target"], metavar="HOST:PORT"),
    Option("rest_target", "remote backend: its REST address (http://HOST:PORT), for metrics.",
           _BP["rest"], metavar="URL"),
)
