"""Which versions of which models are served: TF Serving's manager, source and state monitor.

- Each poll lists every model's base path (version dirs as TF Serving reads them), applies its
  ``model_version_policy`` and hands the aspired versions to TF Serving's
  ``AvailabilityPreservingPolicy``: unload the lowest non-aspired version once an aspired one is
  AVAILABLE (or none is aspired, or several non-aspired ones serve), load the highest new aspired
  version. So a new version dir is loaded first, then the old one unloaded; a failed new version
  leaves the old one serving.
- Loads run one at a time on the manager thread (``--num_load_threads=0``), with
  ``--max_num_load_retries`` retries ``--load_retry_interval_micros`` apart; warmup is part of the
  load. Every version's last state stays visible to GetModelStatus, END included.
- Version labels are checked when a config is applied (``ServerCore::UpdateModelVersionLabelMap``):
  a label may only name an AVAILABLE version unless
  ``--allow_version_labels_for_unavailable_models``.
- ``apply`` takes a whole new model list (config file poll, HandleReloadConfigRequest): new models
  are added, removed ones unloaded, changed policies and labels take effect on the next poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pytest_tfserving.bundled_server.logs import get_logger
from pytest_tfserving.bundled_server.model_config import ModelConfig
from pytest_tfserving.bundled_server.servable import Servable
from pytest_tfserving.bundled_server.state import AVAILABLE, END, LOADING, START, UNLOADING
from pytest_tfserving.bundled_server.status import ServingError, invalid, not_found, precondition

Loader = Callable[[ModelConfig, int, Path], Servable]
Hook = Callable[[Servable], None]


@dataclass(frozen=True)
class VersionStatus:
    """One version as GetModelStatus reports it."""

    version: int
    state: int
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


@dataclass
class _Version:
    version: int
    path: Path
    status: VersionStatus
    servable: Servable | None = None
    held: bool = True  # still managed (not torn down); END versions stay visible, not held
    failed: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5
    interval_s: float = 60.0


UNLOAD_WAIT_S = 60.0  # TF Serving waits for every handle; ours gives up after this

def sid(name: str, version: int) -> str:
    return f"{{name: {name} version: {version}}}"


class ModelManager:
    """Thread-safe: the manager thread polls and loads; request threads resolve and read."""

    def __init__(self, load: Loader, on_available: Hook, on_unload: Hook, retry: RetryPolicy,
                 allow_unavailable_labels: bool = False,
                 on_released: Callable[[], None] | None = None) -> None:
        """``on_unload`` releases an unloaded servable's state; ``on_released`` runs once the
        manager holds no reference to it any more (what is left of it is garbage then)."""
        self._load = load
        self._on_available = on_available
        self._on_unload = on_unload
        self._on_released = on_released
        self._retry = retry
        self._allow_unavailable_labels = allow_unavailable_labels
        self._lock = threading.RLock()  # guards the maps below (readers: request threads)
        self._work = threading.Lock()  # one apply/poll at a time
        self._stop = threading.Event()
        self._models: dict[str, ModelConfig] = {}
        self._versions: dict[str, dict[int, _Version]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._latest: dict[str, Servable] = {}
        self.log = get_logger()

    # -- config ----------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, ModelConfig]:
        with self._lock:
            return dict(self._models)

    def apply(self, models: list[ModelConfig]) -> None:
        """Take a new model list; raises ServingError (TF Serving's code and text) and keeps the
        old list when the new one cannot be taken."""
        with self._work:
            with self._lock:
                for cfg in models:
                    old = self._models.get(cfg.name)
                    if old is not None and old.platform != cfg.platform:
                        raise invalid(f"Illegal to change a model's platform. For model "
                                      f"{cfg.name} platform was {old.platform} and new platform "
                                      f"requested is {cfg.platform}")
                labels = {cfg.name: self._checked_labels(cfg) for cfg in models}
                removed = set(self._models) - {cfg.name for cfg in models}
                self._models = {cfg.name: cfg for cfg in models}
                self._labels = {k: v for k, v in labels.items() if v}
            for name in sorted(removed):
                self.log.info("Model %s was removed from the config: unloading its versions",
                              name)
            self._poll_locked()

    def _checked_labels(self, cfg: ModelConfig) -> dict[str, int]:
        for label, version in cfg.labels.items():
            entry = self._versions.get(cfg.name, {}).get(version)
            available = entry is not None and entry.status.state == AVAILABLE
            allowed = self._allow_unavailable_labels
            if allowed:
                current = self._labels.get(cfg.name, {}).get(label)
                allowed = current is None or current == version
            if not available and not allowed:
                raise precondition(f"Request to assign label to version {version} of model "
                                   f"{cfg.name}, which is not currently available for "
                                   "inference")
        return dict(cfg.labels)

    # -- polling ---------------------------------------------------------------------------
    def poll(self) -> None:
        """List every base path once and converge: load new versions, unload old ones."""
        with self._work:
            self._poll_locked()

    def stop(self) -> None:
        self._stop.set()

    def _poll_locked(self) -> None:
        from pytest_tfserving.model import version_dirs

        with self._lock:
            models = dict(self._models)
            known = set(self._versions)
        for name in sorted(known - set(models)):
            self._converge(name, {}, set())
        for name, cfg in models.items():
            try:
                on_disk = version_dirs(cfg.base_path)
            except OSError as exc:
                self.log.error("FileSystemStoragePathSource encountered a filesystem access "
                               "error: Could not find base path %s for servable %s with error "
                               "%s", cfg.base_path, name, exc.strerror)
                continue
            if not on_disk:
                self.log.warning("No versions of servable %s found under base path %s. Did you "
                                 "forget to name your leaf directory as a number (eg. '/1/')?",
                                 name, cfg.base_path)
            aspired = cfg.policy.aspired(list(on_disk))
            if cfg.policy.kind == "specific":
                for v in sorted(set(cfg.policy.versions) - set(on_disk)):
                    self.log.warning("Version %d of servable %s, which is listed in "
                                     "model_version_policy, is not under base path %s", v, name,
                                     cfg.base_path)
            self._converge(name, on_disk, aspired)

    def _converge(self, name: str, on_disk: dict[int, Path], aspired: set[int]) -> None:
        with self._lock:
            versions = self._versions.setdefault(name, {})
            for v in sorted(aspired):
                entry = versions.get(v)
                if entry is None or not entry.held:
                    versions[v] = _Version(v, on_disk[v], VersionStatus(v, START))
            for entry in versions.values():  # no longer aspired, never served: drop it
                if (entry.held and entry.version not in aspired
                        and entry.status.state != AVAILABLE):
                    entry.held = False
                    if not entry.failed:
                        entry.status = VersionStatus(entry.version, END)
        while not self._stop.is_set():
            action = self._next_action(name, aspired)
            if action is None:
                return
            verb, version = action
            if verb == "unload":
                self._unload(name, version)
            else:
                self._load_version(name, version)

    def _next_action(self, name: str, aspired: set[int]) -> tuple[str, int] | None:
        """TF Serving's AvailabilityPreservingPolicy::GetNextAction."""
        with self._lock:
            held = [e for e in self._versions.get(name, {}).values() if e.held]
        has_aspired = any(e.version in aspired for e in held)
        aspired_serving = any(e.version in aspired and e.status.state == AVAILABLE for e in held)
        unaspired_serving = sorted(e.version for e in held
                                   if e.version not in aspired and e.status.state == AVAILABLE)
        if unaspired_serving and (not has_aspired or aspired_serving
                                  or len(unaspired_serving) > 1):
            return "unload", unaspired_serving[0]
        new = [e.version for e in held if e.version in aspired and e.status.state == START]
        return ("load", max(new)) if new else None

    # -- load / unload ---------------------------------------------------------------------
    def _set(self, name: str, version: int, state: int, code: grpc.StatusCode = grpc.StatusCode.OK,
             message: str = "") -> _Version:
        with self._lock:
            entry = self._versions[name][version]
            entry.status = VersionStatus(version, state, code, message)
            return entry

    def _load_version(self, name: str, version: int) -> None:
        cfg = self._models.get(name)
        entry = self._set(name, version, LOADING)
        if cfg is None:
            return
        attempts = self._retry.retries + 1
        for attempt in range(attempts):
            if attempt:
                self.log.info("Retrying load on servable version %s retry: %d",
                              sid(name, version), attempt)
            self.log.info("Loading servable version %s", sid(name, version))
            result = self._try_load(cfg, version, entry.path)
            if isinstance(result, Servable):
                with self._lock:
                    entry.servable = result
                    entry.status = VersionStatus(version, AVAILABLE)
                    self._refresh_latest(name)
                self.log.info("Successfully loaded servable version %s", sid(name, version))
                return
            error = result
            self.log.error("Loading servable: %s failed: %s: %s", sid(name, version),
                           error.code.name, error.message)
            if attempt + 1 < attempts and self._retry.interval_s > 0:
                if self._stop.wait(self._retry.interval_s):
                    break
        with self._lock:
            entry.failed = True
            entry.status = VersionStatus(version, END, error.code, error.message)

    def _try_load(self, cfg: ModelConfig, version: int, path: Path) -> Servable | ServingError:
        """One load attempt, warmup included; a version loaded but failing its warmup is
        released (its Session closed) before the error is returned."""
        servable: Servable | None = None
        try:
            servable = self._load(cfg, version, path)
            self._on_available(servable)
            return servable
        except ServingError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - any load failure is a version state
            self.log.exception("Loading servable version %s raised", sid(cfg.name, version))
            error = ServingError(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
        if servable is not None:
            self._on_unload(servable)
            del servable
            if self._on_released is not None:
                self._on_released()
        return error

    def _unload(self, name: str, version: int) -> None:
        self.log.info("Unloading servable version %s", sid(name, version))
        with self._lock:
            entry = self._versions[name][version]
            entry.status = VersionStatus(version, UNLOADING)
            servable, entry.servable = entry.servable, None
            self._refresh_latest(name)
        if servable is not None:
            if not servable.wait_released(UNLOAD_WAIT_S):
                self.log.warning("Unloading servable version %s while requests still hold it "
                                 "after %.0f s", sid(name, version), UNLOAD_WAIT_S)
            self._on_unload(servable)
            del servable
            if self._on_released is not None:
                self._on_released()
        with self._lock:
            entry.held = False
            entry.status = VersionStatus(version, END)
        self.log.info("Done unloading servable version %s", sid(name, version))

    def _refresh_latest(self, name: str) -> None:
        ready = [e for e in self._versions.get(name, {}).values()
                 if e.servable is not None and e.status.state == AVAILABLE]
        if ready:
            self._latest[name] = max(ready, key=lambda e: e.version).servable  # type: ignore[assignment]
        else:
            self._latest.pop(name, None)

    # -- requests --------------------------------------------------------------------------
    def label_version(self, name: str, label: str) -> int:
        with self._lock:
            version = self._labels.get(name, {}).get(label)
        if version is None:
            raise invalid(f"Unrecognized servable version label: {label}")
        return version

    def _requested_version(self, spec: Any) -> int | None:
        """The version a ModelSpec names (directly or by label); None: the latest."""
        if not spec.name:
            raise invalid("ModelSpec has no name specified.")
        if spec.HasField("version"):
            return int(spec.version.value)
        if spec.version_label:
            return self.label_version(spec.name, spec.version_label)
        return None

    def resolve(self, spec: Any, hold: bool = False) -> Servable:
        """The servable a ModelSpec asks for (TF Serving's ServableRequestFromModelSpec);
        ``hold``: acquired for the caller, who releases it (its unload waits until then)."""
        name = spec.name
        version = self._requested_version(spec)
        with self._lock:
            if version is not None:
                entry = self._versions.get(name, {}).get(version)
                servable = entry.servable if entry is not None \
                    and entry.status.state == AVAILABLE else None
            else:
                servable = self._latest.get(name)
            if servable is not None and hold:
                servable.acquire()
        if servable is None:
            wanted = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise not_found(f"Servable not found for request: {wanted}")
        return servable

    def statuses(self, spec: Any) -> list[VersionStatus]:
        """GetModelStatus: every version's last state, or the one asked for."""
        name = spec.name
        version = self._requested_version(spec)
        with self._lock:
            versions = {v: e.status for v, e in self._versions.get(name, {}).items()}
        if version is not None:
            if version not in versions:
                raise not_found(f"Could not find version {version} of model {name}")
            return [versions[version]]
        if not versions:
            raise not_found(f"Could not find any versions of model {name}")
        return [versions[v] for v in sorted(versions)]

    def settled(self) -> bool:
        """Every configured model has a version AVAILABLE or ended (the initial load is over)."""
        with self._lock:
            for name in self._models:
                states = {e.status.state for e in self._versions.get(name, {}).values()}
                if not states or states & {START, LOADING}:
                    return False
            return True


def run_polling(manager: ModelManager, stop: threading.Event, fs_poll_s: int,
                config_poll: Callable[[], None] | None, config_poll_s: int) -> None:
    """The manager thread: poll base paths every ``fs_poll_s`` (0: once), the config file every
    ``config_poll_s`` (0: never)."""
    log = get_logger()
    try:
        manager.poll()
    except Exception:  # noqa: BLE001 - the thread must survive to keep polling
        log.exception("File system poll failed")
    next_fs = time.monotonic() + fs_poll_s if fs_poll_s > 0 else float("inf")
    next_cfg = time.monotonic() + config_poll_s if config_poll and config_poll_s > 0 \
        else float("inf")
    while not stop.is_set():
        wake = min(next_fs, next_cfg)
        if wake == float("inf"):
            stop.wait()
            return
        if stop.wait(max(0.0, wake - time.monotonic())):
            return
        now = time.monotonic()
        try:
            if config_poll is not None and now >= next_cfg:
                config_poll()
                next_cfg = now + config_poll_s
            if now >= next_fs:
                manager.poll()
                next_fs = now + fs_poll_s
        except Exception:  # noqa: BLE001
            log.exception("Poll failed")
