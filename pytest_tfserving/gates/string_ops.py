"""Gates ``no_string_ops`` and ``direct_tensor_inputs``: static analysis of saved_model.pb.

``no_string_ops``: no string op is reachable from any signature under gate (see
:mod:`pytest_tfserving.graph` for reachability and what counts as a string op), and the share of
traced compute time spent in string ops stays under ``max_string_time_share`` (the playbook's
5 % alert; see :mod:`pytest_tfserving.string_time`).

``direct_tensor_inputs``: no signature under gate takes a DT_STRING input (serialized
tf.Example) unless allowlisted, and every input's declared dtype is the dtype of the graph tensor
it names. TF Serving feeds inputs by tensor name, so the graph's dtype is what TF accepts: an
input the SignatureDef declares DT_FLOAT that is a DT_STRING placeholder (TF Serving's own
``saved_model_half_plus_three`` ``tensorflow/serving/regress``) is checked as the string input
it is, and the disagreement itself fails the gate (clients follow the declaration: model
metadata, REST's JSON decoding). A disagreement is not allowlistable: fix the SignatureDef.

Neither gate needs a server.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_tfserving import option_parsers as p
from pytest_tfserving.gates import allowlist_options as allowlists
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.graph import InputDtype, OpFinding, SavedModelGraph
from pytest_tfserving.op_allowlist import AllowEntry
from pytest_tfserving.option_spec import option

if TYPE_CHECKING:
    from pytest_tfserving.model import ModelInfo

_SHOWN = 8  # findings listed in a message; the JSON report has all of them

OP_REMEDY = (
    "Remedy (playbook): move feature engineering to the client and send integer IDs as direct "
    "tensors; hash with tf.math.floormod instead of AsString + StringToHashBucket*, and drop "
    "ParseExample by taking int64/float inputs. If an op must stay, allowlist it with a reason: "
    "--tfs-string-op-allow='OpType=reason' or 'glob:node/name/*=reason' (or "
    "@pytest.mark.tfs_no_string_ops(allow=[...]))."
)
INPUT_REMEDY = (
    "Remedy (playbook: bypass tf.Example): give the signature direct tensor inputs such as "
    "user_id: int64[-1] that clients (Java/Go/Python) build as TensorProto, and hash ids in the "
    "graph with tf.math.floormod. If the input must stay a string, allowlist it with a reason: "
    "--tfs-string-input-allow='signature/input=reason' (or "
    "@pytest.mark.tfs_direct_inputs(allow=[...]))."
)


DTYPE_REMEDY = (
    "Remedy: re-export the model so that each SignatureDef input declares the dtype of the "
    "tensor it names (build it with tf.compat.v1.saved_model.build_tensor_info(tensor), or "
    "export a TF2 tf.function with an input_signature). TF feeds by tensor name and rejects a "
    "feed of another dtype, while clients build their requests from the declared dtype. This "
    "is a broken signature, not a style choice, so no allowlist covers it."
)


@dataclass(frozen=True)
class NoStringOpsParams:
    """The no_string_ops allowlist (option, and the marker's entries on top) and time limit."""

    allow: tuple[AllowEntry, ...] = option(
        "string_op_allow", (), allowlists.op_allowlist, "no_string_ops gate allowlist: "
        "'OpType=reason' (op type glob) or 'glob:node/name/*=reason' (node name glob), entries "
        "separated by ';' or newlines; the reason is shown in the report.", metavar="ENTRIES",
        marker="")
    marker_allow: tuple[AllowEntry, ...] = option(
        "", (), str, "allowlist entries added by the marker: a list of 'PATTERN=reason' "
        "strings or a {pattern: reason} dict", marker="allow",
        from_marker=allowlists.op_allow_marker)
    max_string_time_share: float = option(
        "max_string_time_share", 0.05, p.fraction, "no_string_ops gate: largest share of traced "
        "compute time allowed in string ops (the playbook alerts above 5%).", metavar="FRACTION")
    string_time: str = option(
        "string_time", "auto", p.choice("auto", "on", "off"), "no_string_ops gate: measure the "
        "string-op time share by running the signature traced in-process: auto (only when "
        "string ops are found), on, off.", metavar="auto|on|off")

    def check_model(self, model: ModelInfo, sources: Mapping[str, str]) -> None:
        allowlists.check_op_names(self.allow, "--tfs-string-op-allow",
                                  allowlists.source_of(sources, "string_op_allow"))


@dataclass(frozen=True)
class DirectInputsParams:
    """The direct_tensor_inputs allowlist (option, and the marker's entries on top)."""

    allow: tuple[AllowEntry, ...] = option(
        "string_input_allow", (), allowlists.input_allowlist, "direct_tensor_inputs gate "
        "allowlist: 'input=reason' or 'signature/input=reason' (globs), entries separated by ';' "
        "or newlines.", metavar="ENTRIES", marker="")
    marker_allow: tuple[AllowEntry, ...] = option(
        "", (), str, "allowlist entries added by the marker: a list of 'PATTERN=reason' "
        "strings or a {pattern: reason} dict", marker="allow",
        from_marker=allowlists.input_allow_marker)

    def check_model(self, model: ModelInfo, sources: Mapping[str, str]) -> None:
        allowlists.check_input_names(self.allow, model, "--tfs-string-input-allow",
                                     allowlists.source_of(sources, "string_input_allow"))


class AllowlistWarning(UserWarning):
    """An allowlist entry matched nothing: it is stale or misspelled."""


def model_graph(ctx: GateContext) -> SavedModelGraph:
    """The parsed serving graph, shared by both gates through the session cache."""
    key = f"string_ops.graph:{ctx.model.version_dir}"
    graph = ctx.session.cache.get(key)
    if graph is None:
        graph = SavedModelGraph.load(ctx.model.version_dir)
        ctx.session.cache[key] = graph
    assert isinstance(graph, SavedModelGraph)
    return graph


def _allowlist(ctx: GateContext, configured: tuple[AllowEntry, ...], option: str,
               from_marker: tuple[AllowEntry, ...]) -> list[AllowEntry]:
    """The option's entries (with where they came from) and the marker's on top."""
    source = ctx.settings.source(option)
    return [dataclasses.replace(e, source=source) for e in configured] + [
        dataclasses.replace(e, source=ctx.origin) for e in from_marker]


def _warn_unused(entries: Sequence[AllowEntry], used: set[AllowEntry], gate: str,
                 what: str) -> list[str]:
    out = []
    for entry in entries:
        if entry not in used:
            text = (f"{gate}: allowlist entry {entry.text!r} (from {entry.source or 'marker'}) "
                    f"matched no {what}; remove it or fix its pattern")
            warnings.warn(text, AllowlistWarning, stacklevel=2)
            out.append(text)
    return out


def _fmt_finding(finding: OpFinding) -> str:
    return (f"{finding.op_type} node '{finding.node}' in {finding.function} "
            f"[signature {finding.signature}]: {finding.dtype} - {finding.reason}")


def _pct(value: float | None) -> str:
    return "not measured" if value is None else f"{100 * value:.1f}%"


# --- no_string_ops -------------------------------------------------------------------------------

@dataclass
class StringOpsRun:
    """What no_string_ops found: reachable string ops (flagged or allowlisted) and time shares."""

    signatures: list[str]
    graph: SavedModelGraph
    entries: list[AllowEntry]
    findings: dict[str, list[OpFinding]]
    flagged: list[OpFinding] = field(default_factory=list)
    allowed: list[tuple[OpFinding, AllowEntry]] = field(default_factory=list)
    used: set[AllowEntry] = field(default_factory=set)
    shares: dict[str, dict[str, Any]] = field(default_factory=dict)
    worst_share: float | None = None


def check_no_string_ops(ctx: GateContext) -> GateResult:
    params = ctx.params(NoStringOpsParams)
    run = resolve_string_ops(ctx, params)
    warned = _warn_unused(run.entries, run.used, "no_string_ops", "reachable string op")
    measure_string_time(ctx, run, params.string_time)
    time_ok = run.worst_share is None or run.worst_share <= params.max_string_time_share
    return render_string_ops(ctx, params, run, not run.flagged and time_ok, warned)


def resolve_string_ops(ctx: GateContext, params: NoStringOpsParams) -> StringOpsRun:
    """The string ops reachable from each signature under gate, split by the allowlist."""
    signatures = ctx.signatures_under_gate()
    graph = model_graph(ctx)
    entries = _allowlist(ctx, params.allow, "string_op_allow", params.marker_allow)
    run = StringOpsRun(signatures=signatures, graph=graph, entries=entries,
                       findings={name: graph.findings(name) for name in signatures})
    for name in signatures:
        for finding in run.findings[name]:
            entry = next((e for e in entries if e.matches(finding)), None)
            if entry is None:
                run.flagged.append(finding)
            else:
                run.allowed.append((finding, entry))
                run.used.add(entry)
    return run


def measure_string_time(ctx: GateContext, run: StringOpsRun, mode: str) -> None:
    """The string-op share of traced compute time; flagged ops sorted costliest first."""
    run.shares = _time_shares(ctx, run.findings, mode)
    measured_shares = [s["share"] for s in run.shares.values() if s.get("share") is not None]
    run.worst_share = max(measured_shares) if measured_shares else None
    per_node_us = {n: us for s in run.shares.values()
                   for n, us in s.get("per_node_us", {}).items()}
    run.flagged.sort(key=lambda f: (-max((per_node_us.get(n, 0.0) for n in f.runtime_names),
                                         default=0.0), f.kind != "string", f.signature, f.node))


def _string_ops_lines(run: StringOpsRun, params: NoStringOpsParams, passed: bool,
                      warned: list[str]) -> list[str]:
    flagged, allowed, worst_share = run.flagged, run.allowed, run.worst_share
    limit, mode = params.max_string_time_share, params.string_time
    unmeasured = {name: str(s.get("note") or "not measured") for name, s in run.shares.items()
                  if run.findings.get(name) and s.get("share") is None}
    share_text = _pct(worst_share) + (
        f"; not measured for {'; '.join(f'{n} ({why})' for n, why in unmeasured.items())}"
        if unmeasured and mode != "off" else "")
    unknown = [f for f in flagged if f.kind == "unknown"]
    lines: list[str] = []
    if flagged:
        sigs = sorted({f.signature for f in flagged})
        lines.append(
            f"{len(flagged)} string op(s) on the serving path of {', '.join(sigs)} "
            f"({', '.join(sorted({f.op_type for f in flagged}))}); string-op share of traced "
            f"compute time {share_text} (limit {_pct(limit)}):")
        lines += [f"  - {_fmt_finding(f)}" for f in flagged[:_SHOWN]]
        if len(flagged) > _SHOWN:
            lines.append(f"  ... and {len(flagged) - _SHOWN} more (JSON report: "
                         "gates[].details.findings)")
        if unknown:
            lines.append(f"  {len(unknown)} op(s) are not in TF's op registry, so their dtypes "
                         "cannot be checked: allowlist them with a reason if they are numeric.")
    elif not passed:
        lines.append(f"string ops take {_pct(worst_share)} of traced compute time (limit "
                     f"{_pct(limit)}), all of them allowlisted: "
                     f"{', '.join(sorted({f.op_type for f, _ in allowed}))}.")
    if not passed:
        lines.append(OP_REMEDY)
    else:
        lines.append(f"no string op on the serving path of {len(run.signatures)} signature(s) "
                     f"({', '.join(run.signatures)}); string-op time share {_pct(worst_share)}")
    if allowed:
        lines.append("allowlisted: " + "; ".join(
            f"{f.op_type} '{f.node}' ({e.reason})" for f, e in allowed[:_SHOWN]))
    return lines + [f"warning: {w}" for w in warned]


def render_string_ops(ctx: GateContext, params: NoStringOpsParams, run: StringOpsRun,
                      passed: bool, warned: list[str]) -> GateResult:
    flagged, allowed, signatures = run.flagged, run.allowed, run.signatures
    return GateResult(
        name="no_string_ops",
        passed=passed,
        threshold={"string_ops": 0, "max_string_time_share": params.max_string_time_share},
        measured={"string_ops": len(flagged),
                  "unknown_ops": len([f for f in flagged if f.kind == "unknown"]),
                  "allowlisted": len(allowed), "string_time_share": run.worst_share,
                  "op_types": ",".join(sorted({f.op_type for f in flagged})),
                  "signatures": len(signatures)},
        message="\n".join(_string_ops_lines(run, params, passed, warned)),
        details={
            "findings": [f.as_dict() for f in flagged],
            "allowed": [{**f.as_dict(), "allowed_by": e.text, "allow_reason": e.reason,
                         "allow_source": e.source or ctx.origin} for f, e in allowed],
            "time_share": {k: {kk: vv for kk, vv in v.items() if kk != "per_node_us"}
                           for k, v in run.shares.items()},
            "allowlist": [e.as_dict() for e in run.entries],
            "warnings": warned,
            "functions_reached": {n: sorted(run.graph.reach(n).functions) for n in signatures},
        },
    )


def _time_shares(ctx: GateContext, findings: dict[str, list[OpFinding]],
                 mode: str) -> dict[str, dict[str, Any]]:
    if mode == "off":
        return {name: {"measured": False, "share": None, "note": "string_time=off"}
                for name in findings}
    to_time = {n: f for n, f in findings.items()
               if mode == "on" or any(x.kind == "string" for x in f)}
    out: dict[str, dict[str, Any]] = {
        name: {"measured": False, "share": 0.0,
               "note": "no string op reachable (static analysis): nothing to time"}
        for name in findings if name not in to_time}
    if to_time:
        from pytest_tfserving.string_time import measure

        for name, share in measure(ctx.model, to_time).items():
            out[name] = {**share.as_dict(), "per_node_us": share.per_node_us}
    return out


# --- direct_tensor_inputs ------------------------------------------------------------------------

InputItems = list[dict[str, Any]]


def check_direct_inputs(ctx: GateContext) -> GateResult:
    params = ctx.params(DirectInputsParams)
    signatures = ctx.signatures_under_gate()
    entries = _allowlist(ctx, params.allow, "string_input_allow", params.marker_allow)
    flagged, allowed, mismatches, used = measure_direct_inputs(ctx, signatures, entries)
    warned = _warn_unused(entries, used, "direct_tensor_inputs", "DT_STRING signature input")
    return render_direct_inputs(signatures, entries, flagged, allowed, mismatches, warned)


def measure_direct_inputs(ctx: GateContext, signatures: list[str], entries: list[AllowEntry]
                          ) -> tuple[InputItems, InputItems, list[InputDtype], set[AllowEntry]]:
    """DT_STRING inputs (by the graph's dtype), flagged or allowlisted, and dtype mismatches."""
    graph = model_graph(ctx)
    flagged: InputItems = []
    allowed: InputItems = []
    mismatches: list[InputDtype] = []
    used: set[AllowEntry] = set()
    for name in signatures:
        signature = ctx.model.signature(name)
        parsers = sorted({f"{f.op_type} '{f.node}'" for f in graph.findings(name)
                          if f.family and "parsing" in f.family})
        dtypes = {d.key: d for d in graph.input_dtypes(name)}
        mismatches += [d for d in dtypes.values() if d.problem]
        for key, spec in signature.inputs.items():
            checked = dtypes.get(key)
            dtype = checked.effective if checked else spec.dtype
            if dtype != "DT_STRING":
                continue
            item: dict[str, Any] = {
                "signature": name, "input": key, "tensor": spec.tensor_name, "dtype": dtype,
                "declared_dtype": spec.dtype,
                "graph_dtype": checked.graph if checked else None,
                "shape": None if spec.shape is None else list(spec.shape),
                "method_name": signature.method_name, "parsed_by": parsers}
            entry = next((e for e in entries if e.matches_input(name, key)), None)
            if entry is None:
                flagged.append(item)
            else:
                used.add(entry)
                allowed.append({**item, "allowed_by": entry.text, "allow_reason": entry.reason})
    return flagged, allowed, mismatches, used


def _direct_inputs_lines(signatures: list[str], flagged: InputItems, allowed: InputItems,
                         mismatches: list[InputDtype], warned: list[str]) -> list[str]:
    lines: list[str] = []
    for item in flagged[:_SHOWN]:
        what = ("serialized tf.Example, parsed on the serving path by "
                + ", ".join(item["parsed_by"])) if item["parsed_by"] else "string tensor"
        declared = ("" if item["declared_dtype"] == "DT_STRING"
                    else f" in the graph, although the signature declares {item['declared_dtype']}")
        line = (f"signature {item['signature']!r} input {item['input']!r} "
                f"({item['tensor']}) is DT_STRING{declared} ({what})")
        if item["method_name"].endswith(("/classify", "/regress")):
            line += ("; the Classify/Regress APIs always send tf.Example, so serve latency-"
                     "critical traffic through a predict signature with direct tensors")
        lines.append(line)
    if len(flagged) > _SHOWN:
        lines.append(f"... and {len(flagged) - _SHOWN} more (JSON report: gates[].details)")
    if flagged:
        lines.append(INPUT_REMEDY)
    for mismatch in mismatches[:_SHOWN]:
        lines.append(f"signature {mismatch.signature!r} input {mismatch.key!r}: "
                     f"{mismatch.problem}")
    if len(mismatches) > _SHOWN:
        lines.append(f"... and {len(mismatches) - _SHOWN} more dtype mismatch(es) (JSON report: "
                     "gates[].details.dtype_mismatches)")
    if mismatches:
        lines.append(DTYPE_REMEDY)
    if not flagged and not mismatches:
        lines.append(f"every input of {len(signatures)} signature(s) ({', '.join(signatures)}) "
                     "is a direct (non-string) tensor of its declared dtype"
                     + (f" apart from {len(allowed)} allowlisted" if allowed else ""))
    if allowed:
        lines.append("allowlisted: " + "; ".join(
            f"{a['signature']}/{a['input']} ({a['allow_reason']})" for a in allowed))
    return lines + [f"warning: {w}" for w in warned]


def render_direct_inputs(signatures: list[str], entries: list[AllowEntry], flagged: InputItems,
                         allowed: InputItems, mismatches: list[InputDtype],
                         warned: list[str]) -> GateResult:
    return GateResult(
        name="direct_tensor_inputs",
        passed=not flagged and not mismatches,
        threshold={"string_inputs": 0, "dtype_mismatches": 0},
        measured={"string_inputs": len(flagged), "allowlisted": len(allowed),
                  "inputs": ",".join(f"{f['signature']}/{f['input']}" for f in flagged),
                  "dtype_mismatches": len(mismatches),
                  "mismatched_inputs": ",".join(f"{m.signature}/{m.key}" for m in mismatches),
                  "signatures": len(signatures)},
        message="\n".join(_direct_inputs_lines(signatures, flagged, allowed, mismatches,
                                                warned)),
        details={"findings": flagged, "allowed": allowed,
                 "dtype_mismatches": [m.as_dict() for m in mismatches],
                 "allowlist": [e.as_dict() for e in entries], "warnings": warned},
    )
