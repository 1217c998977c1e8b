"""QPS at p99 <= budget for batching off, the playbook defaults and the tuner's recommended
config, on the bundled server, ratios only.

    python benchmarks/bench_tune.py [--models image_cnn,ctr_wide_direct] [--budget 240]
                                    [--p99-ms 50] [--sla-qps 100] [--batch-size 1] [--repeats 3]
                                    [--json reports/bench_tune.json]

For each model: one search (``pytest_tfserving.tune``, every candidate served by its own bundled
server, screening then confirmation within ``--budget`` seconds), then the three configs measured
again one after another at the confirmation length, in ``--repeats`` interleaved rounds so that
they compare like with like: batching off, the playbook's (max_batch_size 32,
batch_timeout_micros 1000, one batch thread per core) and the recommended one. Ratios (QPS at the
p99 budget): recommended / playbook and recommended / off within each round, as min / median /
max over the rounds. Figures depend on the machine (the load generator and the server share
its cores); compare only figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from pytest_tfserving.batching_options import PLAYBOOK_BATCHING
    from pytest_tfserving.load.payloads import for_model
    from pytest_tfserving.load.runner import default_signature
    from pytest_tfserving.tune.output import table
    from pytest_tfserving.tune.runner import TuneSettings, standalone_session, tune_session
    from pytest_tfserving.tune.search import Stage
    from pytest_tfserving.tune.served import ServedTrial
    from pytest_tfserving.tune.space import Candidate

    session = standalone_session(ROOT / "fixtures" / "models" / name, "bundled")
    settings = TuneSettings(p99_ms=args.p99_ms, sla_qps=args.sla_qps, budget_s=args.budget,
                            batch_size=args.batch_size, screen_s=1.0, confirm_s=2.0)
    outcome = tune_session(session, settings, progress=lambda line: print(line, flush=True))
    print("\n".join(table(outcome)), flush=True)
    if outcome.recommended is None:
        return {"model": name, "error": "no config met the SLA", "table": table(outcome)}
    model = session.model()
    signature = default_signature(model, None)
    payloads, _ = for_model(model, model.name, signature, batch_size=args.batch_size)
    trial = ServedTrial(session, signature, payloads, args.p99_ms, args.sla_qps)
    configs = {"off": Candidate(None),
               "playbook": Candidate(PLAYBOOK_BATCHING),
               "recommended": outcome.recommended.candidate}
    rounds: list[dict[str, float]] = []
    measured: dict[str, Any] = {}
    labels = list(configs)
    for index in range(args.repeats):  # interleaved: a noisy minute hits all three alike
        qps: dict[str, float] = {}
        # the order rotates each round: a later run's advantage (the same config measured twice
        # back to back differed by up to 14 %) falls on each config in turn
        for label in labels[index % 3:] + labels[:index % 3]:
            cand = configs[label]
            result = trial(cand, Stage("confirm", 2.0, 0.0))
            qps[label] = result.qps
            measured.setdefault(label, {"config": cand.label(), "rounds": []})["rounds"].append(
                result.as_dict())
            print(f"{name} round {index + 1} {label}: {result.qps:.0f} req/s at p99 <= "
                  f"{args.p99_ms:g} ms ({cand.label()})", flush=True)
        rounds.append(qps)
    return {"model": name, "measured": measured, "table": table(outcome),
            "search_spent_s": round(outcome.spent_s, 1), "trials": len(outcome.tried),
            "median_qps": {label: statistics.median(r[label] for r in rounds)
                           for label in configs},
            "ratio_recommended_vs_playbook": _ratios(rounds, "playbook"),
            "ratio_recommended_vs_off": _ratios(rounds, "off")}


def _ratios(rounds: list[dict[str, float]], other: str) -> dict[str, float] | None:
    """recommended / other per round: min, median, max (a ratio within one round only)."""
    values = [r["recommended"] / r[other] for r in rounds if r[other]]
    if not values:
        return None
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="image_cnn,ctr_wide_direct")
    parser.add_argument("--budget", type=float, default=240.0)
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--sla-qps", type=float, default=100.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of off/playbook/recommended measured one after another")
    parser.add_argument("--json", type=Path, default=ROOT / "reports" / "bench_tune.json")
    args = parser.parse_args()
    results = [bench_model(name, args) for name in args.models.split(",") if name]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cores": os.cpu_count(), "results": results}, indent=2))
    for r in results:
        print(f"{r['model']}: recommended/playbook {r.get('ratio_recommended_vs_playbook')}x, "
              f"recommended/off {r.get('ratio_recommended_vs_off')}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
