"""Bad input, one case a row: each run of pytest with the plugin must end with the expected exit
code, a message naming the bad value and the fix, within a time bound, with no false PASS, and
leaving no server process and no staging directory behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "fixtures" / "models"
CTR = MODELS / "ctr_direct"
USAGE, FAILED = 4, 1


@dataclass(frozen=True)
class Case:
    id: str
    args: Callable[[Path], list[str]]  # from the case's own directory
    rc: int
    says: tuple[str, ...]  # every one of these in the output
    max_s: float = 60.0
    test_file: str = ""  # a test module written into the case's directory
    report: bool = False  # a JSON report is written and must not say passed


def model(path: Path = CTR) -> str:
    return f"--tfs-model={path}"


def write_npz(directory: Path, name: str, **arrays: np.ndarray) -> Path:
    path = directory / name
    np.savez(path, **arrays)
    return path


def copy_model(directory: Path, change: Callable[[Path], None]) -> Path:
    import shutil

    target = directory / "model"
    shutil.copytree(CTR, target)
    change(target / "1")
    return target


def corrupt_pb(version: Path) -> None:
    (version / "saved_model.pb").write_bytes(b"\x08\x96\x01 this is not a SavedModel \xff" * 20)


def truncate_pb(version: Path) -> None:
    data = (version / "saved_model.pb").read_bytes()
    (version / "saved_model.pb").write_bytes(data[: len(data) // 3])


def bad_warmup(version: Path) -> None:
    warmup = version / "assets.extra" / "tf_serving_warmup_requests"
    warmup.parent.mkdir(exist_ok=True)
    warmup.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage, not a TFRecord")


MARKER_TESTS = '''
import pytest

@pytest.mark.tfs_sla(p99_ms="fast")
def test_bad_value():
    pass

@pytest.mark.tfs_serving(rtol=-1)
def test_negative_tolerance():
    pass

@pytest.mark.tfs_warmup(max_ratio=3)
def test_unknown_keyword():
    pass
'''

CASES = [
    Case("p99-zero", lambda d: [model(), "--tfs-sla-p99-ms=0"], USAGE,
         ("Invalid value '0' for --tfs-sla-p99-ms", "must be a number > 0")),
    Case("p99-negative", lambda d: [model(), "--tfs-sla-p99-ms=-5"], USAGE,
         ("Invalid value '-5' for --tfs-sla-p99-ms", "must be a number > 0")),
    Case("p99-text", lambda d: [model(), "--tfs-sla-p99-ms=abc"], USAGE,
         ("Invalid value 'abc' for --tfs-sla-p99-ms", "must be a number")),
    Case("duration-inf", lambda d: [model(), "--tfs-sla-duration=inf"], USAGE,
         ("Invalid value 'inf' for --tfs-sla-duration", "finite")),
    Case("confidence-out-of-range", lambda d: [model(), "--tfs-sla-confidence=1.5"], USAGE,
         ("Invalid value '1.5' for --tfs-sla-confidence",)),
    Case("allowlist-without-reason",
         lambda d: [model(MODELS / "ctr_strings"), "--tfs-gates=no_string_ops",
                    "--tfs-string-op-allow=AsString"], USAGE,
         ("Invalid value 'AsString' for --tfs-string-op-allow", "PATTERN=REASON")),
    Case("allowlist-unknown-op",
         lambda d: [model(MODELS / "ctr_strings"), "--tfs-string-op-allow=AsStrng=legacy"],
         USAGE, ("AsStrng", "TensorFlow does not know", "case-sensitive"), max_s=120),
    Case("input-allowlist-unknown-input",
         lambda d: [model(), "--tfs-string-input-allow=user_idd=legacy"], USAGE,
         ("user_idd", "no signature", "its inputs:")),
    Case("unknown-signature", lambda d: [model(), "--tfs-signatures=nosuch"], USAGE,
         ("--tfs-signatures: signature(s) nosuch do not exist", "serving_default")),
    Case("unknown-sla-signature", lambda d: [model(), "--tfs-sla-signature=nosuch"], USAGE,
         ("--tfs-sla-signature: signature(s) nosuch", "it has:")),
    Case("unknown-int8-signature", lambda d: [model(), "--tfs-int8-signature=nope"], USAGE,
         ("--tfs-int8-signature: signature(s) nope",)),
    Case("model-missing", lambda d: ["--tfs-model=/nonexistent/model"], USAGE,
         ("--tfs-model=/nonexistent/model: no such file or directory", "SavedModel")),
    Case("model-corrupt", lambda d: [model(copy_model(d, corrupt_pb)), "--tfs-gates=serving"],
         FAILED, ("saved_model.pb",), report=True),
    Case("model-truncated", lambda d: [model(copy_model(d, truncate_pb)),
                                       "--tfs-gates=direct_tensor_inputs"],
         FAILED, ("saved_model.pb",), report=True),
    Case("eval-data-missing", lambda d: [model(), f"--tfs-eval-data={d / 'none.npz'}"], USAGE,
         ("--tfs-eval-data=", "no such file")),
    Case("eval-data-wrong-keys",
         lambda d: [model(), "--tfs-eval-data="
                    f"{write_npz(d, 'e.npz', user=np.zeros(4, 'int64'), labels=np.zeros(4))}"],
         USAGE, ("lacks input(s)", "user_id")),
    Case("sla-requests-wrong-keys",
         lambda d: [model(), "--tfs-sla-requests="
                    f"{write_npz(d, 'r.npz', nothing=np.zeros(4))}"],
         USAGE, ("lacks array(s)", "Name the arrays after the signature's inputs")),
    Case("baseline-missing", lambda d: [model(), "--tfs-baseline-model=/nonexistent/base"],
         USAGE, ("--tfs-baseline-model=/nonexistent/base", "cannot be read as a model")),
    Case("batching-file-missing", lambda d: [model(), f"--tfs-batching-file={d / 'b.txt'}"],
         USAGE, ("--tfs-batching-file", "no such file")),
    Case("batching-file-garbage",
         lambda d: [model(), f"--tfs-batching-file={_write(d / 'b.txt', 'max_batch_size: {')}"],
         USAGE, ("b.txt",)),
    Case("max-batch-size-zero", lambda d: [model(), "--tfs-max-batch-size=0"], USAGE,
         ("Invalid value '0' for --tfs-max-batch-size", "integer >= 1")),
    Case("allowed-sizes-contradict",
         lambda d: [model(), "--tfs-max-batch-size=32", "--tfs-allowed-batch-sizes=8,16"],
         USAGE, ("allowed_batch_sizes", "max_batch_size")),
    Case("unknown-gate", lambda d: [model(), "--tfs-gates=servng"], USAGE,
         ("unknown gate(s) servng", "known:")),
    Case("launcher-flag-as-server-arg", lambda d: [model(), "--tfs-server-arg=--port=1"],
         USAGE, ("--port is set by the launcher itself",)),
    Case("model-config-garbage",
         lambda d: [f"--tfs-model-config={_write(d / 'm.config', 'model_config_list { {')}"],
         USAGE, ("--tfs-model-config=",)),
    Case("remote-unreachable",
         lambda d: [model(), "--tfs-backend=remote", "--tfs-target=127.0.0.1:1",
                    "--tfs-gates=serving,warmup,sla"], FAILED, ("127.0.0.1:1",), max_s=60,
         report=True),
    Case("binary-exits", lambda d: [model(), "--tfs-backend=binary", "--tfs-binary=/bin/false",
                                    "--tfs-gates=serving"], FAILED, ("/bin/false",),
         report=True),
    Case("start-timeout", lambda d: [model(), "--tfs-backend=bundled", "--tfs-start-timeout=0.2",
                                     "--tfs-gates=serving"], FAILED,
         ("not AVAILABLE after 0.2 s", "Raise --tfs-start-timeout"), report=True),
    Case("bad-warmup-records", lambda d: [model(copy_model(d, bad_warmup)), "--tfs-gates=warmup",
                                          "--tfs-backend=bundled"], FAILED,
         ("tf_serving_warmup_requests",), max_s=120, report=True),
    Case("bad-marker-arguments", lambda d: [model(), "--tfs-gates=none", "--tfs-backend=bundled"],
         FAILED, ("Invalid value 'fast' for argument p99_ms= of marker tfs_sla",
                  "Invalid value -1 for argument rtol= of marker tfs_serving",
                  "Unknown argument(s) max_ratio in marker tfs_warmup"),
         test_file=MARKER_TESTS, report=True),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def server_pids(marker: str) -> list[int]:
    """Processes whose command line or environment mentions ``marker`` (the case's TMPDIR)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in text:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    work, scratch = tmp_path / "run", tmp_path / "tmp"
    work.mkdir()
    scratch.mkdir()
    (work / ("test_user.py" if case.test_file else "conftest.py")).write_text(case.test_file)
    report = work / "report.json"
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
            *case.args(tmp_path), *([f"--tfs-report={report}"] if case.report else [])]
    env = {**os.environ, "TMPDIR": str(scratch), "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True,
                          timeout=case.max_s + 60)
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == case.rc, out[-3000:]
    for text in case.says:
        assert text in out, f"{text!r} not in:\n{out[-3000:]}"
    assert "Traceback" not in out
    assert elapsed < case.max_s, f"took {elapsed:.1f} s"
    assert "release gate PASSED" not in out
    if case.report:
        assert report.is_file() and json.loads(report.read_text())["passed"] is False
    time.sleep(0.5)
    assert server_pids(str(scratch)) == []
    assert sorted(p.name for p in scratch.iterdir()) == []
