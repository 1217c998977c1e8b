"""The playbook's CTR case on the bundled server: string inputs vs direct tensors, ratios only.

    python benchmarks/bench_playbook.py [--quick] [--candidates 32] [--pairs wide,small]
                                        [--rate 200] [--p99-target 20] [--json PATH]

Two model pairs, each computing the same function with two input paths (fixtures/build_models.py):

* ``wide``:  ctr_wide_strings vs ctr_wide_direct, Criteo-shaped (13 dense + 26 categorical
  features). Strings: serialized tf.Examples with 39 features, ParseExampleV2, AsString +
  StringToHashBucketFast per categorical feature. Direct: ``cat_ids: int64[n, 26]``,
  ``dense: float32[n, 13]``, floormod hashing.
* ``small``: ctr_strings vs ctr_direct (3 id features + 8 dense).

Every request is a ranking request: ``--candidates`` rows (candidate ads scored for one page
view), the same rows for both models of a pair. For each pair:

(a) same serving config (the playbook batching: max_batch_size 32, batch_timeout_micros 1000),
    only the input path differs: p99 at the fixed rate ``--rate``, and the max open-loop rate with
    p99 <= ``--p99-target`` ms (binary search, ``pytest_tfserving.load.search.max_qps``).
(b) the playbook's before/after deployment: strings without batching vs direct with the playbook
    batching (same figures).

Ratios: p99 strings / direct, max QPS direct / strings. Goals (the playbook's 60 -> 18 ms and
200 -> 850 QPS): p99 ratio >= 3x, QPS ratio >= 4x. Also the in-process cost of one request for
each model, split the way the bundled server spends it: decoding the PredictRequest into arrays
and running the signature (``pytest_tfserving.bundled_server`` code, no RPC), so the reader
sees what
share of a served request the input path can change. JSON goes to ``reports/bench_playbook.json``.

Figures depend on the machine: the load generator and the server share its cores; compare only
figures from one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
from bench_load import bundled  # noqa: E402  (same folder: run as a script)

from pytest_tfserving.batching import BatchingParameters  # noqa: E402
from pytest_tfserving.batching_options import PLAYBOOK_BATCHING  # noqa: E402
from pytest_tfserving.load.driver import run_load  # noqa: E402
from pytest_tfserving.load.payloads import predict_bytes  # noqa: E402
from pytest_tfserving.load.result import LoadResult  # noqa: E402
from pytest_tfserving.load.search import max_qps  # noqa: E402
from pytest_tfserving.load.spec import LoadSpec  # noqa: E402
from pytest_tfserving.model import inspect_model  # noqa: E402

MODELS = ROOT / "fixtures" / "models"
SIGNATURE = "serving_default"
PAIRS = {  # pair -> (strings model, direct model)
    "wide": ("ctr_wide_strings", "ctr_wide_direct"),
    "small": ("ctr_strings", "ctr_direct"),
}
GOAL_P99, GOAL_QPS = 3.0, 4.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build_models() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_models",
                                                  ROOT / "fixtures" / "build_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_models"] = module
    spec.loader.exec_module(module)
    return module


def request_inputs(pair: str, candidates: int, count: int) -> dict[str, list[dict[str, Any]]]:
    """``count`` ranking requests of ``candidates`` known-id rows, per model of the pair."""
    bm = build_models()
    strings_name, direct_name = PAIRS[pair]
    if pair == "wide":
        direct, strings = bm.wide_requests(candidates, count, seed=1)
    else:
        world = bm.make_ctr_world()
        rng = np.random.default_rng(1)
        direct, strings = [], []
        for _ in range(count):
            feats, _ = world.sample(rng, candidates)
            examples = np.empty(candidates, dtype=object)
            examples[:] = bm.serialize_ctr_examples(feats)
            direct.append(feats)
            strings.append({"examples": examples})
    return {direct_name: direct, strings_name: strings}


def batching_for(candidates: int) -> BatchingParameters:
    """The playbook batching; max_batch_size raised if one request holds more rows than 32
    (TF Serving rejects a task larger than max_batch_size)."""
    if candidates <= PLAYBOOK_BATCHING.max_batch_size:
        return PLAYBOOK_BATCHING
    return PLAYBOOK_BATCHING.with_overrides(max_batch_size=candidates)


# --- in-process cost ---------------------------------------------------------------------------

def in_process_cost(name: str, payloads: list[bytes], reps: int) -> dict[str, float]:
    """Median us per request: PredictRequest parse + decode to arrays, and the signature run,
    with the bundled server's own code (load_servable, decode_inputs, SignatureRunner.run)."""
    from tensorflow_serving.apis import predict_pb2

    from pytest_tfserving.bundled_server.convert import decode_inputs
    from pytest_tfserving.bundled_server.servable import load_servable

    info = inspect_model(MODELS / name, name)
    servable = load_servable(name, info.version, info.version_dir)
    runner = servable.signatures[SIGNATURE]
    decode_us, run_us = [], []
    for i in range(reps + 20):
        raw = payloads[i % len(payloads)]
        t0 = time.perf_counter()
        arrays = decode_inputs(runner, predict_pb2.PredictRequest.FromString(raw).inputs)
        t1 = time.perf_counter()
        runner.run(arrays)
        t2 = time.perf_counter()
        if i >= 20:  # the first calls trace and warm up
            decode_us.append((t1 - t0) * 1e6)
            run_us.append((t2 - t1) * 1e6)
    decode, run = statistics.median(decode_us), statistics.median(run_us)
    return {"decode_us": round(decode, 1), "run_us": round(run, 1),
            "total_us": round(decode + run, 1), "request_bytes": len(payloads[0])}


# --- load -------------------------------------------------------------------------------------

def serve_and_load(name: str, payloads: list[bytes], batching: BatchingParameters | None,
                   args: argparse.Namespace) -> dict[str, Any]:
    with bundled(MODELS / name, name, batching) as (endpoint, _):

        def run(rate: float) -> LoadResult:
            return run_load(endpoint.grpc_address, payloads, LoadSpec(
                rate=rate, duration_s=args.duration, warmup_s=0.5, stability_pct=0,
                arrival="poisson", timeout_s=2), metrics_url=endpoint.metrics_url,
                model_name=name)

        run(min(args.rate, 50.0))  # warm the server (the strings models carry no warmup file)
        # the p99 of one short run on a shared machine is noisy: the median of a few runs
        fixed_runs = [run(args.rate) for _ in range(args.fixed_runs)]
        found = max_qps(run, args.p99_target, lo=25, hi=8000, precision=args.precision)
    p99 = statistics.median(r.p99_ms for r in fixed_runs)
    p50 = statistics.median(r.p50_ms for r in fixed_runs)
    batch = statistics.median(r.mean_batch_size for r in fixed_runs)
    label = "playbook batching" if batching else "no batching"
    log(f"  {name} ({label}): p99 {p99:.2f} ms (median of {len(fixed_runs)} runs; p50 "
        f"{p50:.2f}) at {args.rate:g} req/s, mean batch {batch:.1f}; {found.summary()}")
    return {"model": name, "batching": batching.as_dict() if batching else None,
            "p99_ms_at_rate": round(p99, 3), "p50_ms_at_rate": round(p50, 3),
            "p99_ms_runs": [round(r.p99_ms, 3) for r in fixed_runs],
            "qps_at_rate": round(statistics.median(r.qps for r in fixed_runs), 1),
            "mean_batch_size": batch, "max_qps": found.rate,
            "trials": [t.as_dict() for t in found.trials]}


def ratios(strings: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    p99 = (strings["p99_ms_at_rate"] / direct["p99_ms_at_rate"]
           if direct["p99_ms_at_rate"] else None)
    qps = direct["max_qps"] / strings["max_qps"] if strings["max_qps"] else None
    return {"p99_ratio": round(p99, 3) if p99 else p99, "qps_ratio": round(qps, 3) if qps else qps,
            "p99_goal_met": bool(p99 and p99 >= GOAL_P99),
            "qps_goal_met": bool(qps and qps >= GOAL_QPS)}


def bench_pair(pair: str, args: argparse.Namespace) -> dict[str, Any]:
    strings_name, direct_name = PAIRS[pair]
    log(f"[{pair}] {strings_name} vs {direct_name}, {args.candidates} candidates per request")
    inputs = request_inputs(pair, args.candidates, args.requests)
    payloads = {name: [predict_bytes(name, SIGNATURE, x) for x in xs]
                for name, xs in inputs.items()}
    cost = {name: in_process_cost(name, payloads[name], args.reps)
            for name in (strings_name, direct_name)}
    for name, c in cost.items():
        log(f"  in-process {name}: decode {c['decode_us']:.0f} us + run {c['run_us']:.0f} us = "
            f"{c['total_us']:.0f} us per request ({c['request_bytes']} request bytes)")
    in_ratio = cost[strings_name]["total_us"] / cost[direct_name]["total_us"]
    share = 1.0 - 1.0 / in_ratio
    log(f"  in-process ratio strings/direct: {in_ratio:.2f}x: the input path (tf.Example "
        f"parsing + string hashing + the bigger request) is {share:.0%} of a strings request, "
        f"so removing it alone can speed a request up by at most {in_ratio:.2f}x (Amdahl), "
        f"less once the server's own per-request work is added")
    batching = batching_for(args.candidates)
    direct = serve_and_load(direct_name, payloads[direct_name], batching, args)
    strings = serve_and_load(strings_name, payloads[strings_name], batching, args)
    strings_unbatched = serve_and_load(strings_name, payloads[strings_name], None, args)
    same = ratios(strings, direct)
    before_after = ratios(strings_unbatched, direct)
    for label, r in (("(a) same config", same), ("(b) before/after", before_after)):
        log(f"  {label}: p99 ratio {r['p99_ratio']}x (goal >= {GOAL_P99:g}x), QPS ratio "
            f"{r['qps_ratio']}x (goal >= {GOAL_QPS:g}x)")
    for name, served in ((direct_name, direct), (strings_name, strings)):
        if served["max_qps"]:
            cost[name]["served_ms_per_request_at_max_qps"] = round(1000 / served["max_qps"], 3)
    return {"models": {"strings": strings_name, "direct": direct_name},
            "in_process": cost, "in_process_ratio": round(in_ratio, 3),
            "input_path_share_in_process": round(share, 3),
            "same_config": {"strings": strings, "direct": direct, **same},
            "before_after": {"strings_no_batching": strings_unbatched,
                             "direct_playbook_batching": direct, **before_after}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="shorter load runs and a coarser search")
    parser.add_argument("--pairs", default="wide,small", help="wide,small or one of them")
    parser.add_argument("--candidates", type=int, default=32,
                        help="rows (candidate ads) per ranking request (%(default)s)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="fixed rate for the p99 comparison, req/s (%(default)s)")
    parser.add_argument("--p99-target", type=float, default=20.0, help="ms (%(default)s)")
    parser.add_argument("--requests", type=int, default=64,
                        help="distinct requests sent round robin (%(default)s)")
    parser.add_argument("--json", type=Path, default=ROOT / "reports" / "bench_playbook.json")
    args = parser.parse_args()
    args.duration = 1.5 if args.quick else 3.0
    args.precision = 0.15 if args.quick else 0.05
    args.reps = 100 if args.quick else 300
    args.fixed_runs = 3 if args.quick else 5
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        parser.error(f"unknown pair(s) {unknown}; choose from {sorted(PAIRS)}")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count()}, "started": time.time(),
        "candidates": args.candidates, "rate": args.rate, "p99_target_ms": args.p99_target,
        "load_duration_s": args.duration, "search_precision": args.precision,
        "goal": f"p99 ratio >= {GOAL_P99:g}x, QPS ratio >= {GOAL_QPS:g}x",
    }
    for pair in pairs:
        results[pair] = bench_pair(pair, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    summary = {pair: {"in_process_us": {k: v["total_us"] for k, v in results[pair]
                                        ["in_process"].items()},
                      "in_process_ratio": results[pair]["in_process_ratio"],
                      "same_config": {k: results[pair]["same_config"][k]
                                      for k in ("p99_ratio", "qps_ratio", "p99_goal_met",
                                                "qps_goal_met")},
                      "before_after": {k: results[pair]["before_after"][k]
                                       for k in ("p99_ratio", "qps_ratio", "p99_goal_met",
                                                 "qps_goal_met")}}
               for pair in pairs}
    print(json.dumps({"goal": results["goal"], "candidates": args.candidates, **summary},
                     indent=2))
    log(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
