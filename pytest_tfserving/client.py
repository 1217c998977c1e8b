"""How to talk to a TF Serving endpoint: status wait with one deadline, predict, metadata,
metrics. numpy in, numpy out. Works the same against real TF Serving and the bundled server."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ModelLoadError, ServerStartError, ServerTimeoutError
from pytest_tfserving.tensors import to_numpy

STATE_NAMES = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING",
               50: "END"}
AVAILABLE, END = 30, 50


class TFServingClient:
    """A gRPC client for one model on one endpoint (plus REST for metrics)."""

    def __init__(self, grpc_address: str, model_name: str, rest_address: str | None = None,
                 metrics_url: str | None = None) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.grpc_address = grpc_address
        self.model_name = model_name
        self.rest_address = rest_address
        self.metrics_url = metrics_url
        self.channel = grpc.insecure_channel(
            grpc_address,
            options=[("grpc.max_receive_message_length", 256 << 20),
                     ("grpc.max_send_message_length", 256 << 20)],
        )
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> TFServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests ---------------------------------------------------------------------------

    def predict_request(self, inputs: Mapping[str, Any], signature_name: str = "serving_default",
                        version: int | None = None,
                        output_filter: tuple[str, ...] = ()) -> Any:
        from pytest_tfserving.predict_requests import predict_request

        return predict_request(self.model_name, signature_name, inputs, version, output_filter)

    def predict(self, inputs: Mapping[str, Any], signature_name: str = "serving_default",
                version: int | None = None, output_filter: tuple[str, ...] = (),
                timeout: float = 30.0) -> dict[str, np.ndarray[Any, Any]]:
        request = self.predict_request(inputs, signature_name, version, output_filter)
        response = self.prediction.Predict(request, timeout=timeout)
        return {key: to_numpy(proto) for key, proto in response.outputs.items()}

    def metadata(self, timeout: float = 10.0) -> Any:
        """GetModelMetadata(signature_def): the SignatureDefMap proto."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.model_name
        request.metadata_field.append("signature_def")
        response = self.prediction.GetModelMetadata(request, timeout=timeout)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return sig_map

    def status(self, timeout: float = 5.0,
               model_name: str | None = None) -> list[tuple[int, str, int, str]]:
        """[(version, state name, error code, error message)] from ModelService, for this
        client's model or ``model_name``."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model_name or self.model_name
        response = self.models.GetModelStatus(request, timeout=timeout)
        return [
            (s.version, STATE_NAMES.get(s.state, str(s.state)), s.status.error_code,
             s.status.error_message)
            for s in response.model_version_status
        ]

    def metrics_text(self, timeout: float = 5.0) -> str:
        """The Prometheus exposition text (empty when the endpoint exports none)."""
        if not self.metrics_url:
            return ""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=timeout) as response:
                return str(response.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError):
            return ""

    # --- readiness ----------------------------------------------------------------------------

    def wait_available(self, deadline: Deadline,
                       exited: Callable[[], str | None] = lambda: None,
                       version: int | None = None) -> int:
        """Poll GetModelStatus until a version (``version`` if given) is AVAILABLE; return it.

        Raises ModelLoadError when the server reports that version (any, without ``version``)
        END with an error, ServerStartError when ``exited()`` reports the server gone,
        ServerTimeoutError at the deadline.
        """
        what = f"model {self.model_name!r}" + (f" version {version}" if version is not None
                                               else "")
        last = "no answer yet"
        delay = 0.05
        while True:
            statuses, last = self._poll_status(deadline, exited, what, self.model_name, last)
            for number, state, code_num, message in statuses:
                if version is not None and number != version:
                    continue
                if state == "AVAILABLE":
                    return number
                if state == "END" and code_num != 0:
                    raise ModelLoadError(
                        f"TF Serving could not load model {self.model_name!r} version {number}: "
                        f"{message or 'error code ' + str(code_num)}. Fix the model export (or "
                        "the serving flags) and run again."
                    )
                last = f"version {number} is {state}"
            if deadline.expired():
                raise ServerTimeoutError(
                    f"{what[0].upper()}{what[1:]} at {self.grpc_address} was not AVAILABLE "
                    f"after {deadline.total_s:.3g} s "
                    f"(last status: {last}). Raise --tfs-start-timeout if the model is large, "
                    "or check the log below."
                )
            delay = self._pause(deadline, delay)

    def wait_settled(self, deadline: Deadline, model_names: Sequence[str],
                     exited: Callable[[], str | None] = lambda: None,
                     ) -> dict[str, list[tuple[int, str]]]:
        """Poll until every model in ``model_names`` reports versions and each of them is
        AVAILABLE or END (a whole ModelServerConfig has loaded); return each model's
        [(version, state)]. ServerTimeoutError at the deadline names the models still loading.
        """
        settled: dict[str, list[tuple[int, str]]] = {}
        last: dict[str, str] = {name: "no answer yet" for name in model_names}
        delay = 0.05
        while True:
            for name in model_names:
                if name in settled:
                    continue
                statuses, last[name] = self._poll_status(deadline, exited, f"model {name!r}",
                                                         name, last[name])
                states = [(version, state) for version, state, _, _ in statuses]
                if states and all(state in ("AVAILABLE", "END") for _, state in states):
                    settled[name] = states
                elif states:
                    last[name] = ", ".join(f"version {v} is {s}" for v, s in states)
            if len(settled) == len(model_names):
                return {name: settled[name] for name in model_names}
            if deadline.expired():
                waiting = "; ".join(f"{name!r}: {last[name]}" for name in model_names
                                    if name not in settled)
                raise ServerTimeoutError(
                    f"The model config at {self.grpc_address} had not loaded after "
                    f"{deadline.total_s:.0f} s: still waiting for {waiting}. Raise "
                    "--tfs-start-timeout if those models are large, or check the log below."
                )
            delay = self._pause(deadline, delay)

    def _poll_status(self, deadline: Deadline, exited: Callable[[], str | None], what: str,
                     model_name: str, last: str) -> tuple[list[tuple[int, str, int, str]], str]:
        """One GetModelStatus for ``model_name``: (statuses, last status text); raises
        ServerStartError when the server is gone."""
        gone = exited()
        if gone is not None:
            raise ServerStartError(
                f"The server for {what} exited before the model was AVAILABLE ({gone}). See "
                "the log below for the reason."
            )
        try:
            timeout = max(0.2, min(2.0, deadline.remaining()))
            return self.status(timeout=timeout, model_name=model_name), last
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.NOT_FOUND:
                return [], f"model {model_name!r} not known yet ({exc.details()})"
            details = exc.details() if hasattr(exc, "details") else exc
            return [], f"{code.name if code else 'error'}: {details}"

    @staticmethod
    def _pause(deadline: Deadline, delay: float) -> float:
        time.sleep(min(delay, deadline.remaining()))
        return min(delay * 1.5, 0.5)
