"""A production ModelServerConfig under gate (``--tfs-model-config``): which model and version
are gated, the config each launcher serves, and the wait until the whole config is up.

Resolved once at session start (``load_deployment``), so a mistake in the file or the options
is a usage error before anything starts. The file is parsed by the bundled server's own parser
(``pytest_tfserving.bundled_server.model_config``: one parser, TF Serving's wording), and what a
launcher serves is the file's own text with only the base paths rewritten (and, where the gated
slot is a staged copy, its version pinned), so policies, labels and every other field stay as in
production. Nothing here imports TensorFlow or gRPC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tfserving.bundled_server.model_config import ModelConfig, parse_model_config
from pytest_tfserving.errors import ConfigError, ModelError
from pytest_tfserving.model import resolve_layout, version_dirs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pytest_tfserving.client import TFServingClient
    from pytest_tfserving.deadline import Deadline
    from pytest_tfserving.launchers.base import ServeConfig

LABELS_FLAG = "allow_version_labels_for_unavailable_models"
SERVED_CONFIG_FILE = "models.config"
CONFIG_FORM = ("model_config_list { config { name: 'NAME' base_path: '/absolute/base/dir' "
               "model_platform: 'tensorflow' } }")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Deployment:
    """The config file as production serves it, and the model under gate within it."""

    config_file: Path  # absolute
    text: str  # the file's text at session start (what every launcher rewrites)
    models: tuple[ModelConfig, ...]  # as in the file
    gated: str  # name of the model under gate
    slot_base: Path  # base dir served in the gated model's slot: production's or the candidate's
    version: int  # the version the slot's policy serves there (the version under gate)
    version_dir: Path
    candidate: Path | None = None  # --tfs-model, when it takes the gated model's slot
    stage_slot: bool = False  # the candidate is one version dir: served from a staged base dir

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    @property
    def gated_model(self) -> ModelConfig:
        return self.model(self.gated)

    def labels(self) -> list[tuple[str, str, int]]:
        """(model, label, version) of every ``version_labels`` entry, in file order."""
        return [(m.name, label, version) for m in self.models
                for label, version in m.labels.items()]

    def describe(self) -> dict[str, Any]:
        gated = self.gated_model
        return {
            "config_file": str(self.config_file),
            "model": self.gated,
            "models": list(self.names),
            "policy": gated.policy.describe(),
            "labels": dict(gated.labels),
            "production_base_path": str(gated.base_path),
            "served_base_path": str(self.slot_base),
            "candidate": str(self.candidate) if self.candidate is not None else None,
        }


# --- resolution at session start --------------------------------------------------------------

def load_deployment(config_file: Path, model_name: str | None,
                    candidate: Path | None) -> Deployment:
    """Read and check the config; pick the model under gate and the version its policy serves.
    Raises ConfigError naming the value at fault and the fix."""
    path = Path(config_file).expanduser().absolute()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the model config {str(path)!r}: {exc}. Pass the path "
                          "of the deployment's --model_config_file.") from None
    try:
        models = tuple(parse_model_config(text, str(path)))
    except ConfigError as exc:
        raise ConfigError(f"{exc}. Fix the file: TF Serving reads it as {CONFIG_FORM}, one "
                          "config { } per model" + _hint(str(exc))) from None
    if not models:
        raise ConfigError(f"The model config {path} lists no models; it needs {CONFIG_FORM}.")
    gated = pick_model(models, model_name, path)
    for model in models:
        if model.name == gated.name and candidate is not None:
            continue  # the candidate takes this slot: production's base path is not served
        check_base_path(model, path)
        served_version(model.base_path, model, path)
    if candidate is None:
        version, version_dir = served_version(gated.base_path, gated, path)
        return Deployment(path, text, models, gated.name, gated.base_path, version, version_dir)
    return _with_candidate(path, text, models, gated, Path(candidate).expanduser())


def pick_model(models: Sequence[ModelConfig], name: str | None, where: Path) -> ModelConfig:
    names = ", ".join(m.name for m in models)
    if name is None:
        if len(models) == 1:
            return models[0]
        raise ConfigError(f"The model config {where} serves {len(models)} models ({names}): pass "
                          "--tfs-model-name=NAME to pick the one under gate.")
    for model in models:
        if model.name == name:
            return model
    raise ConfigError(f"--tfs-model-name={name} names no model in the model config {where}; its "
                      f"models are: {names}. Pass one of those names.")


def check_base_path(model: ModelConfig, where: Path) -> None:
    if not model.base_path.is_dir():
        what = "is not a directory" if model.base_path.exists() else "does not exist"
        raise ConfigError(
            f"Model {model.name}: base_path {str(model.base_path)!r} in the model config {where} "
            f"{what} here. Fix the path in the file, or copy the model's version dirs there "
            "(the gate serves the config from this machine's disk).")


def served_version(base: Path, model: ModelConfig, where: Path) -> tuple[int, Path]:
    """The highest version ``model``'s policy serves from ``base`` (any all-digit dir name is a
    version, as TF Serving reads them)."""
    try:
        dirs = version_dirs(base)
    except OSError as exc:
        raise ConfigError(f"Model {model.name}: cannot list base_path {str(base)!r} ({exc.strerror}"
                          f"; from the model config {where}). Check the path and its "
                          "permissions.") from None
    aspired = model.policy.aspired(list(dirs))
    if not aspired:
        found = [d.name for d in dirs.values()]
        what = (f"has version dirs {found} but model_version_policy {model.policy.describe()} "
                "serves none of them" if found else
                "has no version dirs (all-digit names such as 1 or 00000123)")
        raise ConfigError(
            f"Model {model.name}: base_path {str(base)!r} {what} (model config {where}); TF "
            "Serving would wait for a version forever. Export a version there or fix the policy.")
    version = max(aspired)
    return version, dirs[version]


def _with_candidate(path: Path, text: str, models: tuple[ModelConfig, ...], gated: ModelConfig,
                    candidate: Path) -> Deployment:
    """``--tfs-model`` takes the gated model's slot: a base dir replaces its base_path (the
    policy picks the version there); a single version dir is served alone from a staged base."""
    try:
        base, version, version_dir, _ = resolve_layout(candidate)
    except ModelError as exc:
        raise ConfigError(str(exc)) from None
    if version_dir.absolute() != candidate.absolute():  # a base dir with version dirs
        base = base.absolute()
        version, version_dir = served_version(base, gated, path)
        return Deployment(path, text, models, gated.name, base, version, version_dir, candidate)
    if version not in gated.policy.aspired([version]):
        raise ConfigError(
            f"--tfs-model={candidate} is version {version}, which model {gated.name}'s "
            f"model_version_policy {gated.policy.describe()} in {path} does not serve. Pass a "
            "version the policy serves, or the candidate's base dir.")
    return Deployment(path, text, models, gated.name, version_dir.absolute().parent, version,
                      version_dir, candidate, stage_slot=True)


def _hint(message: str) -> str:
    if "absolute path" in message:
        return ("; base_path must be absolute (TF Serving resolves no relative path against its "
                "working directory)")
    if "URI" in message:
        return "; copy the versions to a local dir and point base_path there"
    return ""


def labels_allowed(server_args: Sequence[str]) -> bool:
    """Whether the extra server flags pass ``--allow_version_labels_for_unavailable_models``
    (true; the last one given counts, as in TF Serving's flag parser)."""
    allowed = False
    for arg in server_args:
        name, sep, value = arg[2:].partition("=")
        if name == LABELS_FLAG:
            allowed = not sep or value.strip().lower() in ("true", "1", "t", "yes")
    return allowed


# --- what a launcher serves -------------------------------------------------------------------

@dataclass(frozen=True)
class ServedModel:
    """One model of the served config, where the server reads it."""

    name: str
    base_path: Path | None  # a host base dir served as it is; None: a staged slot
    version_dir: Path | None = None  # staged slot: the one version dir behind it
    version_dir_name: str = ""
    pin_version: int | None = None  # staged slot whose policy would not serve it: specific {v}


def served_models(config: ServeConfig) -> list[ServedModel]:
    """The config's models as ``config`` serves them: the gated slot is served as it is when
    ``config`` serves the deployment's version there, else (an INT8 copy, a baseline, a single
    version dir) from a staged base dir holding only ``config.version_dir``."""
    deployment = config.deployment
    assert deployment is not None
    out: list[ServedModel] = []
    for model in deployment.models:
        if model.name != deployment.gated:
            out.append(ServedModel(model.name, model.base_path))
        elif (not deployment.stage_slot and config.version == deployment.version
              and config.version_dir == deployment.version_dir):
            out.append(ServedModel(model.name, deployment.slot_base))
        else:
            pin = None if config.version in model.policy.aspired([config.version]) else \
                config.version
            out.append(ServedModel(model.name, None, config.version_dir,
                                   config.version_dir_name, pin))
    return out


def config_text(deployment: Deployment, base_paths: dict[str, str],
                pins: dict[str, int] | None = None) -> str:
    """The file's ModelServerConfig with each model's base_path replaced (and a pinned version
    as ``specific``); every other field as in the file."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    proto = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(deployment.text, proto)
    for entry in proto.model_config_list.config:
        entry.base_path = base_paths[entry.name]
        pin = (pins or {}).get(entry.name)
        if pin is not None:
            entry.model_version_policy.specific.Clear()
            entry.model_version_policy.specific.versions.append(pin)
    return str(text_format.MessageToString(proto))


def mount_point(root: str, name: str, index: int) -> str:
    """Where a model's base dir is mounted in a container: ``root/<name>`` (``model-<i>`` for a
    name that is no plain path segment)."""
    plain = _SAFE_NAME.match(name) is not None and name not in (".", "..")
    return f"{root}/{name if plain else f'model-{index}'}"


def write_served_config(config: ServeConfig, dest: Path,
                        base_path_of: Callable[[int, ServedModel], str],
                        ) -> tuple[Path, dict[str, str]]:
    """Write the served copy of the config into ``dest``; ``base_path_of(index, model)`` says
    where the server sees each model's base dir. Returns the file and each model's base path."""
    assert config.deployment is not None
    models = served_models(config)
    bases = {m.name: base_path_of(i, m) for i, m in enumerate(models)}
    text = config_text(config.deployment, bases,
                       {m.name: m.pin_version for m in models if m.pin_version is not None})
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / SERVED_CONFIG_FILE
    path.write_text(text)
    return path, bases


def describe_served(served_config: Path | str, bases: dict[str, str],
                    statuses: dict[str, list[tuple[int, str]]],
                    host_paths: dict[str, str] | None = None) -> dict[str, Any]:
    """The report's account of what a launcher served: the config file it passed, and each
    model's base path (as the server sees it; ``host_path`` where that differs) and versions."""
    return {"model_config_file": str(served_config),
            "served_models": [{"name": name, "base_path": base,
                               **({"host_path": host_paths[name]} if host_paths else {}),
                               "versions": [{"version": v, "state": s}
                                            for v, s in statuses.get(name, [])]}
                              for name, base in bases.items()]}


# --- readiness --------------------------------------------------------------------------------

def wait_served(client: TFServingClient, config: ServeConfig, deadline: Deadline,
                exited: Callable[[], str | None]) -> dict[str, list[tuple[int, str]]]:
    """Until the model under gate is AVAILABLE, and with a model config until the version under
    gate is AVAILABLE and then every model of the config has settled (each version AVAILABLE or
    END: the bundled server answers inference with UNAVAILABLE until its initial config has
    loaded). One deadline for all of it. Returns each model's (version, state) list."""
    if config.deployment is None:
        client.wait_available(deadline, exited=exited)
        return {}
    client.wait_available(deadline, exited=exited, version=config.version)
    return client.wait_settled(deadline, config.deployment.names, exited=exited)
