"""The evaluation suite's report as a Markdown table (``evaluate-policy --format markdown``, the README's table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def markdown_table(report: Mapping[str, Any]) -> str:
    """One row per cell, one column per policy: captured mean (worst seed); in budget cells the quality share
    of the budget oracle and mean cost / B; in held-out-task-type cells the mean regret."""
    cells = report["cells"]
    names = list(dict.fromkeys(n for c in cells if c["mode"] != "priors" for n in c["policies"]))
    lines = ["| cell | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for cell in cells:
        if cell["mode"] == "priors":
            continue
        row = []
        for name in names:
            f = cell["policies"].get(name)
            if f is None:
                row.append("")
            elif cell["mode"] == "budget":
                row.append(f"{f['quality_share']['mean']:.3f} / {f['cost_over_budget']['mean']:.3f}")
            elif "captured" in f:
                mark = " ↓" if f.get("vs_naive", {}).get("worse") else ""
                row.append(f"{f['captured']['mean']:+.2f} ({f['captured']['worst']:+.2f}){mark}")
            else:
                row.append(f"regret {f['regret']['mean']:.4f}")
        lines.append(f"| {cell['label']} | " + " | ".join(row) + " |")
    priors = [c for c in cells if c["mode"] == "priors"]
    if priors:
        lines += [
            "",
            "| held-out task types (priors fitted on the other half) | "
            + " | ".join(priors[0]["policies"])
            + " |",
        ]
        lines.append("|---" * (len(priors[0]["policies"]) + 1) + "|")
        for cell in priors:
            values = [f"regret {f['regret']['mean']:.4f}" for f in cell["policies"].values()]
            lines.append(f"| {cell['label']} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"
