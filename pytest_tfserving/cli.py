"""The ``python -m pytest_tfserving`` command line (also ``pytest-tfserving``): ``warmup make``,
``warmup inspect`` and ``tune --model M``.

Exit status: 0 done / file valid, 1 the file has problems, 2 bad arguments or unreadable input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_tfserving.errors import TFServingError


def _int_list(raw: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in raw.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a list of integers; write e.g. 1,8,32") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{raw!r}: batch sizes must be integers >= 1")
    return values


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} must be >= 1")
    return value


def _names(raw: str) -> tuple[str, ...]:
    return tuple(x for x in raw.replace(",", " ").split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_tfserving",
        description="Tools for the TF Serving release gate (pytest-tfserving).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    warmup = commands.add_parser(
        "warmup", help="make or inspect assets.extra/tf_serving_warmup_requests",
        description="TF Serving warmup files (TFRecord of PredictionLog, replayed at load).")
    actions = warmup.add_subparsers(dest="action", required=True, metavar="ACTION")

    make = actions.add_parser(
        "make", help="write a warmup file for a SavedModel",
        description="Write <model version>/assets.extra/tf_serving_warmup_requests (or --out).")
    make.add_argument("--model", required=True, type=Path, metavar="PATH",
                      help="SavedModel base dir (numeric version subdirs) or version dir")
    source = make.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-npz", type=Path, metavar="FILE",
                        help="real inputs: arrays named after the signature inputs (or after "
                             "the tf.Example features it parses), one row per example")
    source.add_argument("--synthetic", type=_positive, metavar="N",
                        help="N records of synthesized inputs per signature")
    make.add_argument("--records", type=_positive, metavar="N",
                      help="with --from-npz: records per signature (default 10)")
    make.add_argument("--batch-sizes", type=_int_list, metavar="SIZES",
                      default=(1, 2, 4, 8, 16, 32),
                      help="batch sizes the records cycle through (default 1,2,4,8,16,32)")
    make.add_argument("--signatures", type=_names, default=(), metavar="NAMES",
                      help="signatures to warm (default: every served signature)")
    make.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    make.add_argument("--out", type=Path, metavar="FILE",
                      help="write here instead of the model's assets.extra")
    make.add_argument("--force", action="store_true", help="replace an existing file")

    inspect = actions.add_parser(
        "inspect", help="print a warmup file's records (and problems, given the model)",
        description="Summarize a warmup file; with a model, validate it against the model's "
                    "signatures (exit 1 on problems).")
    inspect.add_argument("path", type=Path, metavar="PATH",
                         help="a warmup file, or a SavedModel dir (its warmup file is used and "
                              "validated)")
    inspect.add_argument("--model", type=Path, metavar="PATH",
                         help="validate against this SavedModel")
    inspect.add_argument("--limit", type=int, default=20, help="records to list (default 20)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    from pytest_tfserving.tune.cli import add_parser

    add_parser(commands)
    return parser


def _make(args: argparse.Namespace) -> int:
    from pytest_tfserving.model import inspect_model
    from pytest_tfserving.warmup_make import make_warmup_file, warmup_plan
    from pytest_tfserving.warmup_validation import validate_warmup_file

    if args.records is not None and args.from_npz is None:
        raise TFServingError("--records goes with --from-npz; with --synthetic N, N is the "
                             "record count per signature.")
    model = inspect_model(args.model)
    out = args.out or model.warmup_file
    signatures, notes = warmup_plan(model, args.signatures)
    for note in notes:
        print(f"NOTE {note}", file=sys.stderr)
    count = make_warmup_file(model, out, from_npz=args.from_npz, synthetic=args.synthetic,
                             records=args.records, seed=args.seed,
                             batch_sizes=args.batch_sizes, signatures=signatures,
                             overwrite=args.force)
    problems = validate_warmup_file(model, out)
    print(f"wrote {count} warmup record(s) to {out} (signatures: {', '.join(signatures)})")
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    return 1 if problems else 0


def _inspect(args: argparse.Namespace) -> int:
    from pytest_tfserving.model import inspect_model
    from pytest_tfserving.warmup_report import inspect_warmup_file

    path: Path = args.path
    model = inspect_model(args.model) if args.model is not None else None
    if path.is_dir():
        model = model or inspect_model(path)
        path = model.warmup_file
    if model is not None and not path.is_file():
        from pytest_tfserving.warmup_validation import validate_warmup_file

        for problem in validate_warmup_file(model, path):
            print(f"PROBLEM {problem}")
        return 1
    summary = inspect_warmup_file(path, model)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print("\n".join(summary.lines(limit=args.limit)))
        if model is not None and not summary.problems:
            print(f"  valid for model {model.name!r} v{model.version}")
    return 1 if summary.problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    try:
        if args.command == "warmup":
            return _make(args) if args.action == "make" else _inspect(args)
        if args.command == "tune":
            from pytest_tfserving.tune.cli import run

            return run(args)
    except TFServingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
