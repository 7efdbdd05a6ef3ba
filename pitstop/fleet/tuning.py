"""``tuning.logs``: log cleanup and rotation in configured directories, plus journal vacuum.

Per directory: logs matching ``pattern`` older than ``compress_after_days`` are gzip-compressed;
live logs bigger than ``max_size_mb`` are rotated in place (copy to ``<name>.<stamp>``, truncate,
compress the copy); compressed logs (and logs too old to be worth compressing) older than
``delete_after_days`` are deleted (``find -delete``: no symlink followed). With ``compress: false``
old logs are deleted instead. A log some process still has open is never compressed (its writes
would go to a deleted file): it waits for a later run, and the outcome counts it as still open.
``journalctl --vacuum-time/--vacuum-size`` runs when configured and journalctl exists (never on a
sandbox host). Idempotent: a second run finds nothing to do. Commands are argument lists.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..connectors.base import Connection
from ..context import RunContext
from ..errors import StepFailed
from ..model import StepOutcome
from ..registry import Placement, Target, has_work, planner, step
from ..work import HasWork
from . import safefile
from .hostutil import AbsPath, chunks, delete_files, find_files, has_command, is_sandbox

GroupName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")]


class LogParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[AbsPath] = Field(default_factory=lambda: ["/var/log/app"], min_length=1)
    pattern: str = Field("*.log", pattern=r"^[A-Za-z0-9_.*?\[\]-]+$")
    compress: bool = True
    compress_after_days: int = Field(1, ge=0)
    delete_after_days: int = Field(30, ge=1)
    max_size_mb: float | None = Field(None, gt=0, description="rotate live logs bigger than this")
    journal_vacuum_time: str | None = Field(None, pattern=r"^[0-9]{1,6}(s|min|h|d|weeks|months|years)$")
    journal_vacuum_size: str | None = Field(None, pattern=r"^[0-9]{1,6}[KMG]$")
    trusted_groups: list[GroupName] = Field(
        default_factory=list, description="groups whose members may write a log's parent directories "
        "(trusted like root: Ubuntu's /var/log is root:syslog 0775, so `[syslog]` there)")
    sudo: bool = False


class LogWork(BaseModel):
    compress: list[str] = Field(default_factory=list)
    still_open: list[str] = Field(default_factory=list)  # old enough to compress, but a process has it open
    rotate: list[str] = Field(default_factory=list)
    delete: list[str] = Field(default_factory=list)
    journal: list[str] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.compress or self.rotate or self.delete)


def _names(pattern: str) -> list[str]:
    return ["(", "-name", f"{pattern}.gz", "-o", "-name", f"{pattern}.*.gz", ")"]


def _work(conn: Connection, p: LogParams, list_deletions: bool = True) -> LogWork:
    """What the step would do. The run deletes with find -delete itself, so it passes
    ``list_deletions=False`` and skips listing the old archives."""
    w = LogWork()
    for path in p.paths:
        too_old = {f for _, f in find_files(conn, path, "-name", p.pattern, "-mtime", f"+{p.delete_after_days}")}
        old = {f for _, f in find_files(conn, path, "-name", p.pattern, "-mtime", f"+{p.compress_after_days}")}
        if p.compress:
            w.compress += sorted(old - too_old)
        if list_deletions:
            archives = find_files(conn, path, *_names(p.pattern), "-mtime", f"+{p.delete_after_days}")
            w.delete += sorted({f for _, f in archives} | too_old)
        if p.max_size_mb:
            big = find_files(conn, path, "-name", p.pattern, "-size", f"+{int(p.max_size_mb * 1024)}k")
            w.rotate += [f for _, f in big if f not in old and f not in too_old]
    if w.compress:
        held = open_files(conn, p.sudo)
        w.still_open = [f for f in w.compress if f in held]
        w.compress = [f for f in w.compress if f not in held]
    if _journal_ok(conn, p):
        w.journal = [f"--vacuum-time={p.journal_vacuum_time}"] if p.journal_vacuum_time else []
        w.journal += [f"--vacuum-size={p.journal_vacuum_size}"] if p.journal_vacuum_size else []
    return w


# Every file some process on the host has open (the targets of /proc/<pid>/fd/*). Without root only
# the login user's own processes are visible: set `sudo` on the step to see the daemons' too.
_OPEN_FILES = 'find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -type l -printf "%l\\n" 2>/dev/null; exit 0'


def open_files(conn: Connection, sudo: bool) -> set[str]:
    return set(conn.run(["sh", "-c", _OPEN_FILES], check=False, sudo=sudo).stdout.splitlines())


def _journal_ok(conn: Connection, p: LogParams) -> bool:
    wanted = p.journal_vacuum_time or p.journal_vacuum_size
    return bool(wanted) and not is_sandbox(conn) and has_command(conn, "journalctl")


@step("tuning.logs", params=LogParams, placement=Placement.OUTSIDE, target=Target.HOSTS)
def tuning_logs(ctx: RunContext, params: LogParams, host: str) -> StepOutcome:
    """Rotate logs: compress old logs, rotate oversized ones, delete old archives, vacuum the journal."""
    conn = ctx.host(host)
    w = _work(conn, params, list_deletions=False)
    # every root file operation acts with the privileges of whoever controls the path to the file
    # (pitstop.fleet.safefile): a file or parent directory swapped for a symlink cannot aim root elsewhere
    done = safefile.Outcome()
    deleted = 0
    problems: list[str] = []  # what find could not delete (as the user controlling the path, say)
    for path in params.paths:  # find -delete, one pass per kind: no symlink below the start is followed
        for tests in (("-name", params.pattern), tuple(_names(params.pattern))):
            got = delete_files(conn, path, *tests, "-mtime", f"+{params.delete_after_days}",
                               sudo=params.sudo, trusted_groups=params.trusted_groups)
            deleted += len(got.files)
            done.refused += [r for r in got.refused if r not in done.refused]
            problems += got.problems
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    count = {"compress": 0, "rotate": 0}
    for op, files in (("compress", w.compress), ("rotate", w.rotate)):
        for chunk in chunks(files):
            res = safefile.apply(conn, op, chunk, stamp, params.sudo, params.trusted_groups)
            count[op] += len(res.done)
            done.refused += res.refused
            done.failed += res.failed
    if done.failed:
        raise StepFailed(f"{host}: log rotation failed for {len(done.failed)} file(s): " + "; ".join(done.failed[:3]))
    freed = _vacuum(conn, w.journal, params.sudo)
    changed = bool(count["compress"] or count["rotate"] or deleted or freed)
    data: dict[str, object] = {"compressed": count["compress"], "rotated": count["rotate"], "deleted": deleted,
                               "journal_freed": freed}
    if w.still_open:
        data["still_open"] = w.still_open
    if done.refused:
        data["refused"] = done.refused
    if problems:
        data["problems"] = problems[:20]
    ctx.event("tuning.logs", host=host, **data)
    return StepOutcome(changed=changed, data=data,
                       summary=f"{count['compress']} compressed, {count['rotate']} rotated, {deleted} deleted"
                       + (f", journal freed {freed}" if freed else "")
                       + (f"; {len(w.still_open)} old log(s) still open, left as they are" if w.still_open else "")
                       + (f"; {len(done.refused)} refused (not safe to touch)" if done.refused else "")
                       + (f"; {len(problems)} could not be deleted (first: {problems[0][:200]})" if problems else ""))


def _vacuum(conn: Connection, args: list[str], sudo: bool) -> str | None:
    """Run journalctl --vacuum-*; the amount freed, or None if nothing was freed."""
    if not args:
        return None
    res = conn.run(["journalctl", *args], check=False, sudo=sudo)
    text = res.stdout + res.stderr
    amounts = [a for a in re.findall(r"freed ([0-9.]+[KMGT]?B?)", text) if not re.fullmatch(r"0(\.0+)?B?", a)]
    return ", ".join(amounts) or None


@planner("tuning.logs")
def plan_logs(ctx: RunContext, params: LogParams, host: str) -> list[str]:
    conn = ctx.host(host)
    w = _work(conn, params)
    lines = [f"compress {len(w.compress)} log file(s), rotate {len(w.rotate)} oversized, "
             f"delete {len(w.delete)} old archive(s)"]
    if w.still_open:
        lines.append(f"leave {len(w.still_open)} old log(s) still open by a process: " + ", ".join(w.still_open[:5]))
    if w.journal:
        lines.append("journalctl " + " ".join(w.journal))
    elif (params.journal_vacuum_time or params.journal_vacuum_size) and is_sandbox(conn):
        lines.append("journal vacuum skipped (sandbox host)")
    return lines


@has_work("tuning.logs")
def logs_work(ctx: RunContext, params: LogParams, host: str) -> HasWork:
    w = _work(ctx.host(host), params)
    if w.empty and not w.journal:
        return HasWork.no("no log to compress, rotate or delete" + (f" ({len(w.still_open)} still open)"
                                                                     if w.still_open else ""))
    if w.empty:
        return HasWork.unknown("journalctl vacuum (cannot tell what it frees)")
    return HasWork.yes(f"compress {len(w.compress)}, rotate {len(w.rotate)}, delete {len(w.delete)} file(s)")
