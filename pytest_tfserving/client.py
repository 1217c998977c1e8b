"""How to talk to a TF Serving endpoint: status wait with one deadline, predict, metadata,
metrics. numpy in, numpy out. Works the same against real TF Serving and the bundled server."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
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
        from pytest_tfserving.requests import predict_request

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

    def status(self, timeout: float = 5.0) -> list[tuple[int, str, int, str]]:
        """[(version, state name, error code, error message)] from ModelService."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
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
                       exited: Callable[[], str | None] = lambda: None) -> int:
        """Poll GetModelStatus until a version is AVAILABLE; return that version.

        Raises ModelLoadError when the server reports END with an error, ServerStartError when
        ``exited()`` reports the server gone, ServerTimeoutError at the deadline.
        """
        last = "no answer yet"
        delay = 0.05
        while True:
            gone = exited()
            if gone is not None:
                raise ServerStartError(
                    f"The server for model {self.model_name!r} exited before the model was "
                    f"AVAILABLE ({gone}). See the log below for the reason."
                )
            try:
                statuses = self.status(timeout=max(0.2, min(2.0, deadline.remaining())))
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.NOT_FOUND:
                    last = f"model {self.model_name!r} not known yet ({exc.details()})"
                else:
                    details = exc.details() if hasattr(exc, "details") else exc
                    last = f"{code.name if code else 'error'}: {details}"
                statuses = []
            for version, state, code_num, message in statuses:
                if state == "AVAILABLE":
                    return version
                if state == "END" and code_num != 0:
                    raise ModelLoadError(
                        f"TF Serving could not load model {self.model_name!r} version {version}: "
                        f"{message or 'error code ' + str(code_num)}. Fix the model export (or "
                        "the serving flags) and run again."
                    )
                last = f"version {version} is {state}"
            if deadline.expired():
                raise ServerTimeoutError(
                    f"Model {self.model_name!r} at {self.grpc_address} was not AVAILABLE after "
                    f"{deadline.total_s:.0f} s (last status: {last}). Raise --tfs-start-timeout "
                    "if the model is large, or check the log below."
                )
            time.sleep(min(delay, deadline.remaining()))
            delay = min(delay * 1.5, 0.5)
