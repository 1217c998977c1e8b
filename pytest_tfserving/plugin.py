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
from pytest_tfserving.settings import check_against_model, declared_classes, resolve_settings


def marker_lines() -> dict[str, str]:
    """Each gate marker with the keywords its settings classes declare (one source)."""
    from pytest_tfserving.gates.registry import GATES
    from pytest_tfserving.option_spec import marker_keywords

    lines: dict[str, str] = {}
    for gate in GATES:
        if gate.marker is None:
            continue
        keywords = sorted({k for cls in gate.param_classes() for k in marker_keywords(cls)})
        lines[gate.marker] = (f"{gate.marker}({', '.join(k + '=' for k in keywords)}): "
                              f"gate {gate.name}: {gate.description}")
    return lines


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser, declared_classes())


def pytest_configure(config: pytest.Config) -> None:
    for name, text in marker_lines().items():
        config.addinivalue_line("markers", f"{name}: {text}")
    settings = resolve_settings(config)
    if settings.active:
        from pytest_tfserving.staging import sweep_once

        sweep_once()  # staging dirs of runs that were killed
    session = TFSSession(settings=settings)
    config.stash[SESSION_KEY] = session
    if settings.active and not hasattr(config, "workerinput"):
        check_model_options(session)


def check_model_options(session: TFSSession) -> None:
    """Options that name parts of the model are checked before any gate or server starts. A
    model that cannot be read at all is left to the gates (each says why, in the report)."""
    from pytest_tfserving.errors import ModelError

    core = session.settings.core
    if session.settings.deployment is None and core.model is not None and \
            not core.model.exists():
        raise options.usage_error(
            f"--tfs-model={core.model}: no such file or directory; give a SavedModel version "
            "dir or a TF Serving base dir (numeric version subdirs)",
            [session.settings.source("model")])
    try:
        model = session.model()
    except ModelError:
        return
    check_against_model(session.settings, model)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = get_session(config).settings
    if not settings.active:
        return []
    core = settings.core
    batching = (f"batching {settings.batching.as_dict()} from {settings.batching_source}"
                if settings.batching else f"batching off ({settings.batching_source})")
    deployment = settings.deployment
    if deployment is None:
        what = f"model {core.model}"
    else:
        slot = (f"candidate {core.model} in its slot" if deployment.candidate is not None
                else f"version {deployment.version} from {deployment.slot_base}")
        what = (f"model config {deployment.config_file}, model {deployment.gated} under gate "
                f"({slot}; {len(deployment.models)} model(s) served)")
    return [f"tfserving: {what}; backend {core.backend}; {batching}"]


class GateSuiteModule(pytest.Module):
    """The gate suite module, collected from the installed package under node id tfs-gates."""

    def _getobj(self) -> Any:
        from pytest_tfserving import gate_suite

        return gate_suite


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    settings = get_session(config).settings
    if not settings.active or not settings.core.gates:
        return
    from pytest_tfserving import gate_suite

    module = GateSuiteModule.from_parent(session, path=Path(gate_suite.__file__),
                                         nodeid="tfs-gates")
    items[:0] = list(session.genitems(module))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which gates this run selected: a selected gate that never reports a verdict
    fails the release (see ``pytest_sessionfinish``)."""
    from pytest_tfserving.gates.registry import gate_by_marker

    state = get_session(session.config)
    for item in session.items:
        entries: list[tuple[str, str]] = []
        callspec = getattr(item, "callspec", None)
        if item.nodeid.startswith("tfs-gates") and callspec is not None:
            entries.append((callspec.params["gate_name"], callspec.params["image"]))
        for marker in item.iter_markers():
            gate = gate_by_marker(marker.name)
            if gate is not None:
                entries.append((gate.name, item.nodeid))
        if entries:
            state.expected[item.nodeid] = entries


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A test skipped before its body ran (a skip marker, a skipping fixture) takes its gates
    with it: they were not selected after all."""
    report = yield
    if report.when == "setup" and report.skipped:
        get_session(item.config).expected.pop(item.nodeid, None)
    return report


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
        run_gate(gate.name, request, keywords=dict(marker.kwargs),
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

    return default_eval_data(get_session(request.config).settings.int8)


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
    from pytest_tfserving.load.runner import LoadRunner
    from pytest_tfserving.terminal import terminal_progress

    session = _require_model(request)
    return LoadRunner(session.settings.load, session.model(), tfs_server, tfs_requests,
                      progress=terminal_progress(request.config))


@pytest.fixture
def tfs_tune(request: pytest.FixtureRequest, tfs_requests: Any) -> Any:
    """Config searches: ``outcome = tfs_tune(space=SearchSpace(max_batch_size=(16, 32)),
    p99_ms=20, budget_s=120)`` serves each candidate for real (its own server, stopped after)
    and returns every trial, ``.recommended``, ``.current``, ``.off`` and ``.gap()``."""
    from pytest_tfserving.terminal import terminal_progress
    from pytest_tfserving.tune.fixture import TuneFixture

    return TuneFixture(_require_model(request), tfs_requests,
                       progress=terminal_progress(request.config))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = get_session(session.config)
    try:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reports for everyone
            workeroutput["tfs_results"] = [r.as_dict() for r in state.results]
            workeroutput["tfs_started"] = state.started
            workeroutput["tfs_backend"] = [state.backend_kind, state.backend_reason]
            workeroutput["tfs_expected"] = state.expected
            return
        record_gates_not_run(state)
        report = state.settings.core.report
        if report is not None and (state.results or state.settings.active):
            from pytest_tfserving.report import write_json

            write_json(report, _report(state))
    finally:
        state.close()


def record_gates_not_run(state: TFSSession) -> None:
    """Every selected gate without a verdict gets one: FAIL, not run."""
    from pytest_tfserving.gates.runner import not_run

    done = {(r.name, r.target) for r in state.results}
    for entries in state.expected.values():
        for name, target in entries:
            if (name, target) not in done:
                state.record(not_run(name, target))
                done.add((name, target))


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
    for nodeid, entries in (output.get("tfs_expected") or {}).items():
        state.expected[nodeid] = [tuple(entry) for entry in entries]
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
            model = {"path": str(deployment.version_dir if deployment
                                 else state.settings.core.model),
                     "error": str(exc)}
            if deployment is not None:
                model.update(name=deployment.gated, model_config=str(deployment.config_file))
    settings = {"backend": state.settings.core.backend,
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
    if state.settings.core.report is not None:
        terminalreporter.line(f"JSON report: {state.settings.core.report}")
