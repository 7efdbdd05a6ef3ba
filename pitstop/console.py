"""What an operator sees: live progress per stage (read off the audit log) and a final summary."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table

from .units import human_seconds

ICONS = {"succeeded": "[green]✓[/green]", "failed": "[bold red]✗[/bold red]", "skipped": "[yellow]–[/yellow]"}


def stream_to_devnull(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null: later writes, and the interpreter's final flush,
    succeed silently (the note on SIGPIPE in Python's ``signal`` docs)."""
    try:
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def why_gone(exc: BaseException) -> str:
    """``EPIPE``, ``EIO``, ``ENOSPC`` ... for an error writing to a terminal or a pipe."""
    code = getattr(exc, "errno", None)
    return errno.errorcode.get(code, type(exc).__name__) if isinstance(code, int) else type(exc).__name__


class SafeConsole(Console):
    """A console that is only a viewer: a closed pipe (``| head``), EIO, a full disk on stdout or a vanished
    terminal switch it off for the rest of the process, and never change what the process does.

    rich's own ``on_broken_pipe`` raises ``SystemExit(1)``, which, inside a Prefect flow run, crashed the
    run in the middle of its maintenance window; here the stream is pointed at /dev/null instead (so the
    interpreter's final flush is silent too) and the run goes on. ``switched_off`` says why (``EPIPE`` ...).
    """

    switched_off: str | None = None

    def on_broken_pipe(self) -> None:
        self._switch_off("EPIPE")

    def _check_buffer(self) -> None:
        try:
            super()._check_buffer()
        except OSError as exc:  # EIO (terminal gone), ENOSPC (stdout on a full disk), EBADF ...
            self._switch_off(why_gone(exc))

    def _switch_off(self, why: str) -> None:
        self.quiet = True
        self.switched_off = self.switched_off or why
        del self._buffer[:]
        stream_to_devnull(self.file)


def safe_console(*, stderr: bool = False, **kwargs: Any) -> SafeConsole:
    return SafeConsole(stderr=stderr, highlight=False, **kwargs)


def make_safe(console: Console) -> None:
    """Turn a rich console someone else created (Prefect's log handler on stderr) into a viewer too: rich's
    default raises ``SystemExit`` on a closed pipe, from inside whatever logged a line."""
    if not isinstance(console, SafeConsole):
        console.__class__ = SafeConsole


def guard_log_consoles() -> None:
    """Every logging handler that prints through a rich console (Prefect's ``PrefectConsoleHandler`` on
    the root logger) gets a safe one: a warning logged while stderr is a closed pipe must not end the run."""
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for lg in loggers:
        for h in lg.handlers:
            c = getattr(h, "console", None)
            if isinstance(c, Console):
                make_safe(c)


@contextmanager
def terminal_hangup_ignored() -> Iterator[None]:
    """While a run is in progress, a hung-up terminal (SSH dropped: the shell passes SIGHUP on to its jobs)
    does not kill it in the middle of its window: SIGHUP is ignored — by the commands the run starts too,
    which inherit that, as under ``nohup`` — and the console, whose writes then fail with EIO, switches off.
    Only from the main thread (where signal handlers live); the previous disposition comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def write_stdout(text: str) -> bool:
    """Write ``text`` (JSON output) to stdout and flush it. A closed pipe, EIO or a full disk points stdout
    at /dev/null and returns False: whoever stopped reading does not change the command's exit code."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
        return True
    except (OSError, ValueError):
        stream_to_devnull(sys.stdout)
        return False


def emit_json(obj: Any) -> None:
    """A command's ``--json`` output on stdout (a closed pipe never changes the exit code: ``write_stdout``)."""
    write_stdout(json.dumps(obj, indent=2, default=str) + "\n")


def flush_std_streams() -> None:
    """The interpreter's exit flush, done early: a stream whose reader is gone is pointed at /dev/null, so
    no ``Exception ignored ... BrokenPipeError`` and no exit status 120 replace the command's own."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            stream_to_devnull(stream)
            try:
                stream.flush()
            except (OSError, ValueError):
                pass


class ConsoleView:
    """Live progress, as an audit-log listener. It only shows: when its console is switched off (the reader
    went away), the run's audit log gets one ``console.off`` event saying why, and the run goes on."""

    def __init__(self, console: Console | None = None):
        self.console = console or safe_console()
        self._audit: Any = None
        self._noted = threading.Lock()

    def attach(self, audit: Any) -> None:
        """The run's audit log (``AuditLog``), where a switched-off console is noted once."""
        self._audit = audit

    def __call__(self, ev: dict[str, Any]) -> None:
        if ev["kind"] == "console.off":
            return
        try:
            self._show(ev)
        finally:
            why = getattr(self.console, "switched_off", None)
            if why and self._audit is not None and self._noted.acquire(blocking=False):
                self._audit.emit("console.off", reason=why, stream=getattr(self.console.file, "name", None),
                                 note="the operator's console stopped showing progress; the run went on")

    def _show(self, ev: dict[str, Any]) -> None:
        d, kind, c = ev["data"], ev["kind"], self.console
        if kind == "run.started":
            rehearsal = (d.get("options") or {}).get("rehearsal") if isinstance(d.get("options"), dict) else False
            c.print(("[bold yellow]REHEARSAL[/bold yellow] " if rehearsal else "")
                    + f"[bold]pitstop[/bold] run [cyan]{d['run_id']}[/cyan] — runbook [bold]{d['runbook']}[/bold] "
                    f"on [bold]{d['environment']}[/bold] ({d['trigger']})", soft_wrap=True)
        elif kind == "run.resumed" and not d.get("report_only"):
            c.print(f"[bold]pitstop[/bold] resuming run [cyan]{d['run_id']}[/cyan] — runbook [bold]{d['runbook']}"
                    f"[/bold] on [bold]{d['environment']}[/bold]: {len(d.get('completed') or [])} steps already done",
                    soft_wrap=True)
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
            since = f" [dim](maintenance on since {d['down_since']}, an earlier attempt)[/dim]" \
                if d.get("down_since") else ""
            c.print(f"[bold magenta]● maintenance window open[/bold magenta]{since}")
        elif kind == "window.closed":
            c.print(f"[bold magenta]○ maintenance window closed[/bold magenta] after {human_seconds(d['duration_s'])}")
        elif kind == "approval.requested":
            from rich.markup import escape

            c.print("[bold yellow]⏸ waiting for approval[/bold yellow] " + escape(
                f"before {d.get('before')!r} from {' or '.join(d.get('approvers') or [])} until {d.get('deadline')} "
                f"(the window has not opened): pitstop approve {d.get('run_id')} --env {d.get('environment')} "
                "--comment '...' (or reject)"), soft_wrap=True)
        elif kind == "window.decision" and not d.get("window_needed", True):
            c.print(f"[bold green]○ no window needed:[/bold green] [dim]{d.get('window_why')}[/dim]", soft_wrap=True)
        elif kind == "window.not_needed":
            c.print(f"[bold green]○ no window needed: maintenance mode stays off —[/bold green] [dim]{d.get('why')}"
                    "[/dim]", soft_wrap=True)
        elif kind == "plan.deviation":
            c.print(f"[yellow]! {d.get('reason')}[/yellow]", soft_wrap=True)
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
    if w.get("needed") is False:
        console.print(f"maintenance window: no window needed — {w.get('not_needed_why')}", soft_wrap=True,
                      markup=False)
    elif w["duration_s"] is not None:
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
