"""The README's option and marker tables, generated from the declarations (one source); run
``python -m pytest_tfserving.option_table`` to print them."""

from __future__ import annotations

from pytest_tfserving.option_spec import declared, marker_keywords


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def options_table() -> list[str]:
    """One row per option: flag (with metavar), default, help, and the class declaring it."""
    from pytest_tfserving.settings import declared_classes

    lines = ["| flag (ini `tfs_*`, env `TFS_*`) | default | meaning |", "|---|---|---|"]
    for cls in declared_classes():
        for _, spec in declared(cls):
            if not spec.name:
                continue
            flag = spec.flag + (f"={spec.metavar}" if spec.metavar else "")
            default = "" if spec.default in (None, ()) else f"`{spec.default}`"
            lines.append(f"| `{_cell(flag)}` | {_cell(default)} | {_cell(spec.help)} |")
    return lines


def markers_table() -> list[str]:
    """One row per gate marker with the keywords its settings classes accept."""
    from pytest_tfserving.gates.registry import GATES

    lines = ["| marker | gate | keywords |", "|---|---|---|"]
    for gate in GATES:
        if gate.marker is None:
            continue
        keywords = sorted({k for cls in gate.param_classes() for k in marker_keywords(cls)})
        lines.append(f"| `{gate.marker}` | `{gate.name}` | "
                     f"{', '.join(f'`{k}`' for k in keywords)} |")
    return lines


def markdown() -> str:
    return "\n".join([*options_table(), "", *markers_table()])


if __name__ == "__main__":
    print(markdown())
