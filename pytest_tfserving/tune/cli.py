"""``python -m pytest_tfserving tune --model M``: the config search from the command line,
with the same launchers as the gate (bundled server, binary or Docker)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pytest_tfserving.tune.runner import DEFAULT_BUDGET_S


def add_parser(commands: Any) -> None:
    tune = commands.add_parser(
        "tune", help="search batching / thread-pool configs for the most QPS within a p99",
        description="Serve each candidate config for real, find the highest open-loop rate "
                    "whose p99 stays within --p99-ms, and write the best as a TF Serving "
                    "batching parameters file. Exit 1 when the shipped config is more than "
                    "--max-gap below the best (or nothing meets the SLA).")
    tune.add_argument("--model", required=True, type=Path, metavar="PATH",
                      help="SavedModel base dir (numeric version subdirs) or version dir")
    tune.add_argument("--backend", default="auto",
                      choices=("auto", "bundled", "binary", "docker"),
                      help="where each candidate is served (default auto)")
    tune.add_argument("--p99-ms", type=float, default=25.0, help="p99 budget (default 25)")
    tune.add_argument("--min-qps", type=float, default=300.0,
                      help="the SLA rate p99 is also reported at (default 300)")
    tune.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, metavar="S",
                      help=f"seconds for the whole search (default {DEFAULT_BUDGET_S:g})")
    tune.add_argument("--max-gap", type=float, default=0.2,
                      help="largest allowed shortfall of the shipped config (default 0.2)")
    tune.add_argument("--batching-file", type=Path, metavar="FILE",
                      help="the shipped batching parameters (default: the playbook's)")
    tune.add_argument("--out", type=Path, metavar="FILE", default=Path("batching_parameters.txt"),
                      help="where the recommended batching file goes")
    tune.add_argument("--plot", type=Path, metavar="DIR", help="write tune_pareto.png here")
    tune.add_argument("--json", type=Path, metavar="FILE", help="write the details as JSON")


def run(args: argparse.Namespace) -> int:
    from pytest_tfserving.batching import read_batching_file
    from pytest_tfserving.gates.tune import verdict
    from pytest_tfserving.tune.output import details, plot, table, write_recommended
    from pytest_tfserving.tune.runner import TuneSettings, standalone_session, tune_session

    batching = read_batching_file(args.batching_file) if args.batching_file else None
    session = standalone_session(args.model, args.backend, batching,
                                 str(args.batching_file or "playbook defaults"))
    settings = TuneSettings(p99_ms=args.p99_ms, sla_qps=args.min_qps, budget_s=args.budget,
                            max_gap=args.max_gap, out=args.out)
    try:
        outcome = tune_session(session, settings, progress=lambda line: print(line, flush=True))
    finally:
        session.stop_servers()
    print("\n".join(table(outcome)))
    info = details(outcome, args.out)
    if outcome.recommended is not None:
        print(f"wrote {args.out}; serve with: {write_recommended(outcome, args.out)}")
    if args.plot is not None:
        print(f"plot: {plot(outcome, args.plot / 'tune_pareto.png')}")
    if args.json is not None:
        args.json.write_text(json.dumps(info, indent=2))
    failures = verdict(outcome, settings)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0
