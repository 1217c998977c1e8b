"""The served version's state, as ModelService.GetModelStatus reports it."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import grpc

# tensorflow_serving.apis.get_model_status_pb2.ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50
STATE_NAMES = {START: "START", LOADING: "LOADING", AVAILABLE: "AVAILABLE",
               UNLOADING: "UNLOADING", END: "END"}


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: int
    error_code: grpc.StatusCode
    error_message: str

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, "UNKNOWN")


class ModelState:
    """Thread-safe: the loader thread writes, the front ends read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._status = VersionStatus(0, START, grpc.StatusCode.OK, "")

    def get(self) -> VersionStatus:
        with self._lock:
            return self._status

    def set(self, state: int, version: int | None = None,
            error_code: grpc.StatusCode = grpc.StatusCode.OK, error_message: str = "") -> None:
        with self._lock:
            v = self._status.version if version is None else version
            self._status = VersionStatus(v, state, error_code, error_message)
