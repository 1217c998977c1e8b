"""TF Serving flags and config files from a ServeConfig, shared by every launcher."""

from __future__ import annotations

from pathlib import Path

from pytest_tfserving.launchers.base import METRICS_PATH, ServeConfig

BATCHING_FILE = "batching_parameters.txt"
MONITORING_FILE = "monitoring_config.txt"


def write_config_files(config: ServeConfig, host_dir: Path) -> list[str]:
    """Write the batching and monitoring files into ``host_dir``; return the names written."""
    host_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    if config.batching is not None:
        (host_dir / BATCHING_FILE).write_text(config.batching.to_text())
        written.append(BATCHING_FILE)
    if config.monitoring:
        (host_dir / MONITORING_FILE).write_text(
            f'prometheus_config {{\n  enable: true\n  path: "{METRICS_PATH}"\n}}\n'
        )
        written.append(MONITORING_FILE)
    return written


def tuning_flags(config: ServeConfig, files_dir: str) -> list[str]:
    """Flags beyond port/model: batching, threads, monitoring, warmup, extra flags.

    ``files_dir`` is where the server sees the files ``write_config_files`` wrote (a host path
    for local launchers, the mount point inside a container).
    """
    flags: list[str] = []
    if config.batching is not None:
        flags += ["--enable_batching=true",
                  f"--batching_parameters_file={files_dir}/{BATCHING_FILE}"]
    if config.monitoring:
        flags.append(f"--monitoring_config_file={files_dir}/{MONITORING_FILE}")
    if config.intra_op_threads:
        flags.append(f"--tensorflow_intra_op_parallelism={config.intra_op_threads}")
    if config.inter_op_threads:
        flags.append(f"--tensorflow_inter_op_parallelism={config.inter_op_threads}")
    flags.append(f"--enable_model_warmup={'true' if config.enable_warmup else 'false'}")
    # a gate fails fast on a model that does not load (TF Serving retries 5 times, 1 min apart)
    if not any(f.startswith("--max_num_load_retries") for f in config.extra_flags):
        flags.append("--max_num_load_retries=0")
    if config.warmup_iterations != 1:
        flags.append(f"--num_request_iterations_for_warmup={config.warmup_iterations}")
    if config.prefer_tflite:
        flags.append("--prefer_tflite_model=true")
    flags += list(config.extra_flags)
    return flags


def model_server_flags(config: ServeConfig, grpc_port: int, rest_port: int,
                       model_base_path: str, files_dir: str,
                       model_config_file: str | None = None) -> list[str]:
    """The full command-line flags for tensorflow_model_server (or the bundled server): one
    model (``--model_name``/``--model_base_path``), or with ``model_config_file`` the served
    copy of a ModelServerConfig."""
    what = ([f"--model_config_file={model_config_file}"] if model_config_file is not None else
            [f"--model_name={config.model_name}", f"--model_base_path={model_base_path}"])
    return [
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        *what,
        *tuning_flags(config, files_dir),
    ]


def stage_model(config: ServeConfig, root: Path) -> Path:
    """A base dir that holds exactly the version under gate (a symlink), so TF Serving's
    latest-version policy serves that version even when the real base dir has newer ones.
    A config with ``base_dir`` (the rollout gate's own copy) is served from there as it is."""
    if config.base_dir is not None:
        return config.base_dir
    base = root / config.model_name
    base.mkdir(parents=True, exist_ok=True)
    link = base / config.version_dir_name
    if not link.exists():
        link.symlink_to(config.version_dir.resolve(), target_is_directory=True)
    return base
