"""What to serve: TF Serving's ModelServerConfig, read and validated as ``ServerCore`` does.

A ``--model_config_file`` holds a text ``ModelServerConfig``; without one the server builds a
single-model config from ``--model_name`` / ``--model_base_path`` (``BuildSingleModelConfig``).
Validation follows ``server_core.cc``: unique names, absolute base paths, a platform set (and
served here: ``tensorflow``, or ``tflite``), no ``custom_model_config``. Errors are ``ConfigError``
with TF Serving's wording plus the value at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_tfserving.errors import ConfigError

PolicyKind = Literal["latest", "all", "specific"]
SERVED_PLATFORMS = ("tensorflow", "tflite")
CONFIG_TYPE = "tensorflow.serving.ModelServerConfig"


@dataclass(frozen=True)
class VersionPolicy:
    """``model_version_policy``: which of the versions on disk are served."""

    kind: PolicyKind = "latest"
    num_versions: int = 1  # latest
    versions: tuple[int, ...] = ()  # specific

    def aspired(self, on_disk: list[int]) -> set[int]:
        ordered = sorted(on_disk)
        if self.kind == "all":
            return set(ordered)
        if self.kind == "specific":
            return set(ordered) & set(self.versions)
        return set(ordered[-self.num_versions:]) if ordered else set()

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {{ num_versions: {self.num_versions} }}"
        if self.kind == "specific":
            return f"specific {{ versions: {list(self.versions)} }}"
        return "all {}"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path
    platform: str = "tensorflow"
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.name, self.base_path, self.platform, self.policy,
                     tuple(sorted(self.labels.items()))))


def single_model_config(name: str, base_path: str) -> list[ModelConfig]:
    """``--model_name`` / ``--model_base_path`` as a one-model config (relative paths are taken
    from the working directory, as TF Serving's file system does)."""
    return [ModelConfig(name=name, base_path=Path(base_path).absolute())]


def _policy(proto: Any, name: str) -> VersionPolicy:
    if not proto.HasField("model_version_policy"):
        return VersionPolicy()
    which = proto.model_version_policy.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        versions = tuple(int(v) for v in proto.model_version_policy.specific.versions)
        if not versions:
            raise ConfigError(f"Model {name}: model_version_policy specific {{}} lists no "
                              "versions; add 'versions: N' lines")
        return VersionPolicy("specific", versions=versions)
    if which == "latest":
        n = int(proto.model_version_policy.latest.num_versions) or 1
        if n < 0:
            raise ConfigError(f"Model {name}: latest num_versions must be >= 1, got {n}")
        return VersionPolicy("latest", num_versions=n)
    return VersionPolicy()


def _platform(proto: Any) -> str:
    if proto.model_type:  # deprecated ModelType enum; TENSORFLOW = 1
        if proto.model_platform:
            raise ConfigError("Illegal setting both ModelServerConfig::model_type (deprecated) "
                              "and ModelServerConfig::model_platform, model name is "
                              f"{proto.name}")
        if proto.model_type != 1:
            raise ConfigError(f"ModelServerConfig::model_type choice {proto.model_type} not "
                              "supported.")
        return "tensorflow"
    if not proto.model_platform:
        raise ConfigError("Illegal setting neither ModelServerConfig::model_type (deprecated) "
                          f"nor ModelServerConfig::model_platform, model name is {proto.name}. "
                          'Add model_platform: "tensorflow"')
    if proto.model_platform not in SERVED_PLATFORMS:
        raise ConfigError(f"Model {proto.name} requested platform {proto.model_platform!r}; "
                          f"the bundled server serves {', '.join(SERVED_PLATFORMS)}")
    return str(proto.model_platform)


def _is_relative(path: str) -> bool:
    return "://" not in path and not path.startswith("/")


def from_proto(config: Any, where: str) -> list[ModelConfig]:
    """Validated models of a ``ModelServerConfig`` message."""
    which = config.WhichOneof("config")
    if which is None:
        return []
    if which != "model_config_list":
        raise ConfigError(f"{where}: ModelServer does not yet support custom model config; "
                          "use model_config_list")
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for proto in config.model_config_list.config:
        if proto.name in seen:
            raise ConfigError(f"Illegal to list model {proto.name} multiple times in config "
                              f"list ({where})")
        seen.add(proto.name)
        if not proto.name:
            raise ConfigError(f"{where}: a model config has no name")
        if _is_relative(proto.base_path):
            raise ConfigError(f"Expected model {proto.name} to have an absolute path or URI; "
                              f"got base_path()={proto.base_path} ({where})")
        if "://" in proto.base_path:
            raise ConfigError(f"Model {proto.name}: base_path {proto.base_path} is a URI; the "
                              "bundled server reads local paths only")
        models.append(ModelConfig(
            name=proto.name, base_path=Path(proto.base_path), platform=_platform(proto),
            policy=_policy(proto, proto.name),
            labels={str(k): int(v) for k, v in proto.version_labels.items()},
        ))
    return models


def parse_model_config(text: str, where: str) -> list[ModelConfig]:
    """Parse and validate a text ModelServerConfig; the parse error reads like TF Serving's."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"Error parsing text-format {CONFIG_TYPE}: {exc} (in {where})") from None
    return from_proto(config, where)


def read_model_config(path: str) -> list[ModelConfig]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read --model_config_file {path!r}: {exc.strerror}") from None
    return parse_model_config(text, path)
