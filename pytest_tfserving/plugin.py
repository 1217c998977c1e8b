"""pytest hooks only: options, markers, gate-suite collection, fixtures, terminal summary.

Nothing here imports TensorFlow; without ``--tfs-model`` (or a tfs fixture/marker in use) the
plugin adds nothing to a run but its options and markers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_tfserving import options
from pytest_tfserving.session import SESSION_KEY, TFSSession, get_session
from pytest_tfserving.settings import resolve_settings

MARKERS = {
    "tfs_serving": "tfs_serving(rtol=, atol=, signatures=): the served model answers and "
                   "matches an in-process call",
    "tfs_no_string_ops": "tfs_no_string_ops(allow=['OpType=reason', 'glob:node/*=reason'], "
                         "signatures=[...], max_string_time_share=0.05, string_time='auto'): "
                         "no string ops on the serving path",
    "tfs_direct_inputs": "tfs_direct_inputs(allow=['signature/input=reason'], signatures=[...]): "
                         "serving inputs are direct tensors, not serialized tf.Example",
    "tfs_int8_delta": "tfs_int8_delta(metric=, max_delta=, max_rel_delta=): INT8 post-training "
                      "quantization keeps accuracy within bounds",
    "tfs_warmup": "tfs_warmup(max_cold_ratio=, steady_requests=, compare_without_warmup=, "
                  "signatures=[...]): warmup file valid, replayed, first request warm",
    "tfs_sla": "tfs_sla(p99_ms=, min_qps=, max_error_rate=, duration=, concurrency=, "
               "batching={...}): P99/QPS SLA under load",
    "tfs_tune": "tfs_tune(budget_s=, max_gap=, p99_ms=, sla_qps=, out=): the shipped batching "
                "config within max_gap of the best one found",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.stash[SESSION_KEY] = TFSSession(settings=resolve_settings(config), config=config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = get_session(config).settings
    if not settings.active:
        return []
    batching = (f"batching {settings.batching.as_dict()} from {settings.batching_source}"
                if settings.batching else f"batching off ({settings.batching_source})")
    deployment = settings.deployment
    if deployment is None:
        what = f"model {settings.model}"
    else:
        slot = (f"candidate {settings.model} in its slot" if deployment.candidate is not None
                else f"version {deployment.version} from {deployment.slot_base}")
        what = (f"model config {deployment.config_file}, model {deployment.gated} under gate "
                f"({slot}; {len(deployment.models)} model(s) served)")
    return [f"tfserving: {what}; backend {settings.backend}; {batching}"]


class GateSuiteModule(pytest.Module):
    """The gate suite module, collected from the installed package under node id tfs-gates."""

    def _getobj(self) -> Any:
        from pytest_tfserving import gate_suite

        return gate_suite


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    settings = get_session(config).settings
    if not settings.active or not settings.gates:
        return
    from pytest_tfserving import gate_suite

    module = GateSuiteModule.from_parent(session, path=Path(gate_suite.__file__),
                                         nodeid="tfs-gates")
    items[:0] = list(session.genitems(module))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """After a test body passed, run the gate of each tfs_* gate marker on it; a failed gate
    fails the test (a test outcome, never an error from a summary hook)."""
    result = yield
    gate_markers = [m for m in item.iter_markers() if m.name.startswith("tfs_")]
    if not gate_markers:
        return result
    from pytest_tfserving.gates.registry import gate_by_marker
    from pytest_tfserving.gates.runner import run_gate

    request = getattr(item, "_request", None)
    for marker in gate_markers:
        gate = gate_by_marker(marker.name)
        if gate is None or request is None:
            continue
        if marker.args:
            pytest.fail(f"@pytest.mark.{marker.name} takes keyword arguments only, got "
                        f"positional {marker.args!r}", pytrace=False)
        run_gate(gate.name, request, overrides=dict(marker.kwargs),
                 origin=f"marker {marker.name} on {item.nodeid}", target=item.nodeid)
    return result


def _require_model(request: pytest.FixtureRequest) -> TFSSession:
    session = get_session(request.config)
    if not session.settings.active:
        pytest.skip("no model under gate: pass --tfs-model=PATH (or set tfs_model in the ini "
                    "file / TFS_MODEL in the environment)")
    return session


@pytest.fixture(scope="session")
def tfs_model(request: pytest.FixtureRequest) -> Any:
    """The inspected model: name, version, versions, tags, signatures with tensor specs."""
    return _require_model(request).model()


@pytest.fixture(scope="session")
def tfs_server(request: pytest.FixtureRequest) -> Any:
    """The running server with the model under gate (one per session / xdist worker)."""
    return _require_model(request).server()


@pytest.fixture(scope="session")
def tfs_client(tfs_server: Any) -> Any:
    """A client for ``tfs_server``: predict (numpy in/out), metadata, status, metrics."""
    return tfs_server.client()


@pytest.fixture(scope="session")
def tfs_eval_data(request: pytest.FixtureRequest) -> Any:
    """Eval set for the int8_delta gate: --tfs-eval-data loaded, or None when not configured.
    Override it in conftest.py to return a dict of arrays (inputs + labels) or an EvalData."""
    from pytest_tfserving.int8.eval_data import default_eval_data

    return default_eval_data(request.config)


@pytest.fixture
def tfs_requests() -> Any:
    """Requests for load runs (SLA gate, tfs_load): override in your conftest.py to return a list
    of {input_name: array} dicts (or PredictRequests). None: warmup records, else synthesized."""
    return None


@pytest.fixture
def tfs_load(request: pytest.FixtureRequest, tfs_server: Any, tfs_requests: Any) -> Any:
    """Runs load against ``tfs_server``: ``result = tfs_load(rate=500, duration=10)``;
    ``result.p99_ms``, ``.qps``, ``.percentile(99.9)``, ``.errors``, ``.batch_sizes``,
    ``result.assert_p99_below(20)``; ``tfs_load.max_qps(p99_ms=20)`` searches the rate."""
    from pytest_tfserving.load.runner import LoadRunner, terminal_progress

    return LoadRunner(request.config, _require_model(request).model(), tfs_server, tfs_requests,
                      progress=terminal_progress(request.config))


@pytest.fixture
def tfs_tune(request: pytest.FixtureRequest, tfs_requests: Any) -> Any:
    """Config searches: ``outcome = tfs_tune(space=SearchSpace(max_batch_size=(16, 32)),
    p99_ms=20, budget_s=120)`` serves each candidate for real (its own server, stopped after)
    and returns every trial, ``.recommended``, ``.current``, ``.off`` and ``.gap()``."""
    from pytest_tfserving.tune.fixture import TuneFixture

    return TuneFixture(_require_model(request), request.config, tfs_requests)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = get_session(session.config)
    try:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reports for everyone
            workeroutput["tfs_results"] = [r.as_dict() for r in state.results]
            workeroutput["tfs_started"] = state.started
            workeroutput["tfs_backend"] = [state.backend_kind, state.backend_reason]
        elif state.settings.report is not None and (state.results or state.settings.active):
            from pytest_tfserving.report import write_json

            write_json(state.settings.report, _report(state))
    finally:
        state.stop_servers()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect each worker's gate results, so that the table and the JSON
    report cover the whole run."""
    output = getattr(node, "workeroutput", None) or {}
    if "tfs_results" not in output:
        return
    from pytest_tfserving.gates.result import GateResult

    state = get_session(node.config)
    state.results.extend(GateResult.from_dict(r) for r in output["tfs_results"])
    state.started.extend(output.get("tfs_started", []))
    kind, reason = output.get("tfs_backend", [None, ""])
    if kind and state.backend_kind is None:
        state.backend_kind, state.backend_reason = kind, reason


def _report(state: TFSSession) -> dict[str, Any]:
    from pytest_tfserving.report import build_report

    model = None
    if state.settings.active:
        try:
            model = state.model_description()
        except Exception as exc:  # an unreadable model is reported by the gates themselves
            deployment = state.settings.deployment
            model = {"path": str(deployment.version_dir if deployment else state.settings.model),
                     "error": str(exc)}
            if deployment is not None:
                model.update(name=deployment.gated, model_config=str(deployment.config_file))
    settings = {"backend": state.settings.backend,
                "batching": state.settings.batching.as_dict() if state.settings.batching else None,
                "batching_source": state.settings.batching_source}
    return build_report(state.results, model, state.backend_description(), settings)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = get_session(config)
    if not state.results:
        return
    from pytest_tfserving.report import gate_table, header_line

    report = _report(state)
    terminalreporter.section("TF Serving release gate")
    terminalreporter.line(header_line(report["backend"], report["model"] or None))
    for line in gate_table(state.results, terminalreporter._tw.fullwidth):
        terminalreporter.line(line)
    verdict = "PASSED" if report["passed"] else "FAILED"
    terminalreporter.line(f"release gate {verdict}",
                          green=report["passed"], red=not report["passed"], bold=True)
    for result in state.results:
        for plot in result.details.get("plots", []) or []:
            terminalreporter.line(f"plot ({result.name}): {plot}")
    if state.settings.report is not None:
        terminalreporter.line(f"JSON report: {state.settings.report}")
