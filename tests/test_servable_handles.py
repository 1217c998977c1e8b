"""A version is unloaded only when no request holds it (TF Serving's ServableHandle): a request
that resolved version 1 just before version 2 replaced it still runs on version 1."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tensorflow_serving.apis import model_pb2

from pytest_tfserving.bundled_server.manager import ModelManager, RetryPolicy
from pytest_tfserving.bundled_server.model_config import ModelConfig
from pytest_tfserving.bundled_server.servable import Servable


class _State:
    """A version's model state; records when it was closed."""

    def __init__(self) -> None:
        self.closed_at: float | None = None

    def close(self) -> None:
        self.closed_at = time.monotonic()


def _manager() -> ModelManager:
    def load(config: ModelConfig, version: int, path: Path) -> Servable:
        return Servable(config.name, version, path, {}, {}, _State())

    return ModelManager(load, on_available=lambda s: None, on_unload=lambda s: s.close(),
                        retry=RetryPolicy(retries=0))


def test_a_held_version_is_closed_only_after_its_request_releases_it(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    manager = _manager()
    manager.apply([ModelConfig(name="m", base_path=tmp_path / "m")])
    held = manager.resolve(model_pb2.ModelSpec(name="m"), hold=True)
    assert held.version == 1
    (tmp_path / "m" / "2").mkdir()
    poll = threading.Thread(target=manager.poll)
    poll.start()
    time.sleep(0.5)  # v2 loaded and published; v1 waits for its holder
    assert poll.is_alive() and held.root.closed_at is None
    released_at = time.monotonic()
    held.release()
    poll.join(timeout=10)
    assert not poll.is_alive()
    assert held.root.closed_at is not None and held.root.closed_at >= released_at
    assert manager.resolve(model_pb2.ModelSpec(name="m")).version == 2


def test_holding_is_counted_per_request():
    servable = Servable("m", 1, Path("."), {}, {}, _State())
    servable.acquire()
    servable.acquire()
    servable.release()
    assert not servable.wait_released(0.05)
    servable.release()
    assert servable.wait_released(0.05)
