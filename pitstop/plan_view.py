"""``pitstop plan`` on the console: a table when it fits, else one block per step; a word is never cut.

A six-column table squeezed into 80 columns cuts step names, check names and paths mid-word
(``check.postg`` / ``res_connect``), and an operator copies those. So the table is drawn only on a terminal
wide enough for the longest word of every column; otherwise each step is a block of lines — wrapped at
spaces to the terminal's width (a word longer than the line keeps its own line, whole), and not wrapped at
all when the output is piped.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from .plan import Plan

COLUMNS = ("phase", "stage", "step", "placement", "targets", "would")


def _rows(plan: Plan) -> list[tuple[str, str, str, str, str, str, str, str, bool]]:
    """One row per step, and the approval gate (docs/approvals.md) before the step it guards."""
    rows = []
    gate = plan.approval if plan.approval is not None and plan.approval.skipped is None else None
    for s in plan.steps:
        if gate is not None and s.id == gate.step:
            rows.append((s.phase.value, "approval", "wait for approval", " or ".join(gate.approvers), "outside",
                         "before the window opens", gate.audience,
                         f"abort after {gate.timeout_s:.0f}s without a decision", False))
        rows.append((s.phase.value, s.stage.value, s.label, s.uses, s.placement.value, s.why,
                     ", ".join(s.hosts) or s.target.value, "\n".join(s.would), s.destructive))
    return rows


def _cells(plan: Plan) -> list[tuple[str, ...]]:
    """Each row's cells as plain text (a step cell: label, then kind; placement, then why)."""
    return [(phase, stage, f"{label}\n{uses}" + (" destructive" if destructive else ""), f"{placement}\n{why}",
             targets, would) for phase, stage, label, uses, placement, why, targets, would, destructive in _rows(plan)]


def _column_widths(console: Console, plan: Plan) -> list[int] | None:
    """Widths for the table's columns on this terminal, each at least its longest word, or None when the
    table cannot fit (or the output is not a terminal)."""
    if not console.is_terminal:
        return None
    least = [len(c) for c in COLUMNS]
    natural = list(least)
    for cells in _cells(plan):
        for i, cell in enumerate(cells):
            least[i] = max(least[i], *(len(w) for w in cell.split()), 0)
            natural[i] = max(natural[i], *(len(x) for x in cell.splitlines()), 0)
    room = console.width - (3 * len(COLUMNS) + 1)
    if sum(least) > room:
        return None
    if sum(natural) <= room:
        return natural
    spare, want = room - sum(least), [n - m for n, m in zip(natural, least, strict=True)]
    return [m + spare * w // sum(want) for m, w in zip(least, want, strict=True)]


def print_plan(console: Console, plan: Plan, title: str) -> None:
    widths = _column_widths(console, plan)
    if widths is not None:
        t = Table(title=title)
        for col, width in zip(COLUMNS, widths, strict=True):
            t.add_column(col, width=width)
        for phase, stage, label, uses, placement, why, targets, would, destructive in _rows(plan):
            t.add_row(phase, stage, f"{escape(label)}\n[dim]{uses}[/dim]" + (" [red]destructive[/red]"
                      if destructive else ""), f"{placement}\n[dim]{escape(why)}[/dim]", escape(targets),
                      escape(would))
        console.print(t)
        return
    width = console.width if console.is_terminal else 0

    def say(text: str, indent: int = 0) -> None:
        pad = " " * indent
        lines = textwrap.wrap(text, width=max(width, indent + 20), initial_indent=pad, subsequent_indent=pad + "  ",
                              break_long_words=False, break_on_hyphens=False) if width else [pad + text]
        for line in lines or [""]:
            console.print(line, soft_wrap=True, markup=False, highlight=False)

    say(title)
    for phase, stage, label, uses, placement, why, targets, would, destructive in _rows(plan):
        say(f"{phase} · {stage} · {label} ({uses}{', destructive' if destructive else ''})")
        say(f"placement: {placement} — {why}", 4)
        say(f"targets: {targets}", 4)
        for line in would.splitlines():
            say(f"would: {line}", 4)
