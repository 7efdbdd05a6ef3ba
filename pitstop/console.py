"""What an operator sees: live progress per stage (read off the audit log) and a final summary."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table

from .units import human_seconds

ICONS = {"succeeded": "[green]✓[/green]", "failed": "[bold red]✗[/bold red]", "skipped": "[yellow]–[/yellow]"}


class SafeConsole(Console):
    """A console that is only a viewer: a closed pipe (``| head``), EIO, a full disk on stdout or a vanished
    terminal switch it off for the rest of the process, and never change what the process does.

    rich's own ``on_broken_pipe`` raises ``SystemExit(1)``, which, inside a Prefect flow run, crashed the
    run in the middle of its maintenance window; here the stream is pointed at /dev/null instead (so the
    interpreter's final flush is silent too) and the run goes on.
    """

    def on_broken_pipe(self) -> None:
        self._switch_off()

    def _check_buffer(self) -> None:
        try:
            super()._check_buffer()
        except OSError:  # EIO (terminal gone), ENOSPC (stdout on a full disk), EBADF ...
            self._switch_off()

    def _switch_off(self) -> None:
        self.quiet = True
        del self._buffer[:]
        try:
            fd = self.file.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass


def safe_console(*, stderr: bool = False, **kwargs: Any) -> SafeConsole:
    return SafeConsole(stderr=stderr, highlight=False, **kwargs)


class ConsoleView:
    def __init__(self, console: Console | None = None):
        self.console = console or safe_console()

    def __call__(self, ev: dict[str, Any]) -> None:
        d, kind, c = ev["data"], ev["kind"], self.console
        if kind == "run.started":
            rehearsal = (d.get("options") or {}).get("rehearsal") if isinstance(d.get("options"), dict) else False
            c.print(("[bold yellow]REHEARSAL[/bold yellow] " if rehearsal else "")
                    + f"[bold]pitstop[/bold] run [cyan]{d['run_id']}[/cyan] — runbook [bold]{d['runbook']}[/bold] "
                    f"on [bold]{d['environment']}[/bold] ({d['trigger']})", soft_wrap=True)
        elif kind == "stage.started":
            if d["phase"] == "window":
                c.print(f"[bold magenta]▶ {d['stage']}[/bold magenta] [dim](inside window)[/dim]")
            else:
                c.print(f"[bold blue]▶ {d['stage']}[/bold blue] [dim]({d['phase']} window)[/dim]")
        elif kind == "step.finished":
            icon = ICONS.get(d["status"], "?")
            tail = d.get("summary") or ""
            if d.get("error"):
                tail = f"[red]{d['error']}[/red]"
            c.print(f"  {icon} {d['step']} [dim]{human_seconds(d.get('duration_s') or 0)}[/dim] {tail}")
        elif kind == "step.skipped":
            c.print(f"  {ICONS['skipped']} {d['step']} [dim]skipped: {d['reason']}[/dim]")
        elif kind == "window.opened":
            c.print("[bold magenta]● maintenance window open[/bold magenta]")
        elif kind == "window.closed":
            c.print(f"[bold magenta]○ maintenance window closed[/bold magenta] after {human_seconds(d['duration_s'])}")
        elif kind == "maintenance.safety_net":
            c.print(f"[yellow]! lifting maintenance mode on {', '.join(d['hosts'])} (always-finally)[/yellow]")


def print_rows(console: Console, title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A listing whose cells are never cut or wrapped mid-word (ids are copied into other commands).

    A boxed table when it fits the terminal whole; otherwise (a narrow terminal, a pipe) plain aligned
    columns on one line per row, which a terminal may soft-wrap but which is never truncated."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    if console.is_terminal and sum(widths) + 3 * len(columns) + 1 <= console.width:
        table = Table(title=title)
        for c in columns:
            table.add_column(c, no_wrap=True)
        for r in rows:
            table.add_row(*r)
        console.print(table)
        return
    console.print(title, soft_wrap=True, markup=False)
    for r in [columns, *rows]:
        console.print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip(),
                      soft_wrap=True, markup=False, highlight=False)


def print_summary(console: Console, report: dict[str, Any], run_dir: str) -> None:
    table = Table(title=f"{report['runbook']} on {report['environment']}: {report['status'].upper()}",
                  title_style="bold green" if report["status"] == "succeeded" else "bold red")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("steps", justify="right")
    for s in report["stages"]:
        done = sum(1 for st in s["steps"] if st["status"] == "succeeded")
        table.add_row(s["name"], s["status"], f"{done}/{len(s['steps'])}" if s["steps"] else "—")
    console.print(table)
    w = report["maintenance_window"]
    if w["duration_s"] is not None:
        console.print(f"maintenance window: {human_seconds(w['duration_s'])} "
                      f"(announced {human_seconds(report['expected_downtime_s'] or 0)})")
    rows = sum(report["cleanup"]["tables"].values())
    if report["cleanup"]["rules"]:
        console.print(f"rows purged: {rows} ({', '.join(f'{t}: {n}' for t, n in report['cleanup']['tables'].items())})")
    if report.get("backup"):
        b = report["backup"]
        console.print(f"backup: {b['location']} ({'verified' if b['verified'] else 'NOT verified'})", soft_wrap=True)
    if report.get("failure"):
        f = report["failure"]
        console.print(f"[bold red]failed at {f['stage']} / {f['step']}: {f['error']}[/bold red]")
    console.print(f"report: [bold]{run_dir}/report.html[/bold] (also report.md, report.json)", soft_wrap=True)
