"""Generic host steps: ``host.command`` (an argument list) and ``host.script`` (a script uploaded,
run with an interpreter, removed), each with expected exit codes.

Idempotence guards, as in Ansible: ``creates`` (skip when that host path exists) and ``unless``
(an argv; skip when it exits 0). Without a guard the step runs on every run and reports a change.
Nothing here passes through a shell that pitstop builds: argv lists only, quoted by the transport.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
from typing import cast

from pydantic import BaseModel, ConfigDict, Field

from ..connectors.base import BatchOp, Cmd, Connection, Put
from ..context import RunContext
from ..errors import CommandFailed, StepFailed
from ..model import CommandResult, StepOutcome
from ..registry import Placement, Target, has_work, planner, step
from ..work import HasWork
from . import safefile
from .hostutil import AbsPath


class Guards(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expect_exit: list[int] = Field(default_factory=lambda: [0])
    timeout_s: float | None = Field(None, gt=0)
    sudo: bool = False
    creates: AbsPath | None = Field(None, description="skip when this host path exists")
    unless: list[str] | None = Field(None, min_length=1, description="skip when this argv exits 0")


class CommandParams(Guards):
    argv: list[str] = Field(min_length=1, description="program and arguments; never a shell string")


class ScriptParams(Guards):
    script: str = Field(min_length=1, description="the script text (uploaded, never interpolated)")
    interpreter: list[str] = Field(default_factory=lambda: ["/bin/sh"], min_length=1)
    args: list[str] = Field(default_factory=list)
    remote_dir: AbsPath = "/var/tmp"  # noqa: S108 - unique name, mode 0700, atomic rename


def _skip_reason(conn: Connection, g: Guards) -> str | None:
    if g.creates and conn.exists(g.creates):
        return f"{g.creates} exists"
    if g.unless and conn.run(g.unless, check=False, sudo=g.sudo, timeout=g.timeout_s).exit_code == 0:
        return f"`{shlex.join(g.unless)}` succeeded"
    return None


def _finish(ctx: RunContext, host: str, argv: list[str], res: CommandResult, g: Guards) -> StepOutcome:
    ctx.event("command", host=host, argv=argv, exit_code=res.exit_code, duration_s=round(res.duration_s, 3),
              stdout_tail=res.stdout[-500:], stderr_tail=res.stderr[-500:])
    if res.exit_code not in g.expect_exit:
        raise CommandFailed(argv, res.exit_code, res.stderr, host)
    return StepOutcome(changed=True, summary=f"exit {res.exit_code}",
                       data={"exit_code": res.exit_code, "stdout_tail": res.stdout[-500:]})


@step("host.command", params=CommandParams, placement=Placement.INSIDE, target=Target.HOSTS, generic=True)
def host_command(ctx: RunContext, params: CommandParams, host: str) -> StepOutcome:
    """Run a command (argument list) on each host; fail on an unexpected exit code."""
    conn = ctx.host(host)
    skip = _skip_reason(conn, params)
    if skip:
        return StepOutcome(changed=False, summary=f"skipped: {skip}")
    res = conn.run(params.argv, timeout=params.timeout_s, check=False, sudo=params.sudo)
    return _finish(ctx, host, params.argv, res, params)


def _script_path(ctx: RunContext, params: ScriptParams) -> str:
    digest = hashlib.sha256(params.script.encode()).hexdigest()[:12]
    return f"{params.remote_dir.rstrip('/')}/pitstop-{ctx.run_id}-{digest}.script"


@step("host.script", params=ScriptParams, placement=Placement.INSIDE, target=Target.HOSTS, generic=True)
def host_script(ctx: RunContext, params: ScriptParams, host: str) -> StepOutcome:
    """Upload a script, run it with its interpreter on each host, remove it; check the exit code."""
    conn = ctx.host(host)
    skip = _skip_reason(conn, params)
    if skip:
        return StepOutcome(changed=False, summary=f"skipped: {skip}")
    path = _script_path(ctx, params)
    real = conn.path(path)
    argv = [*params.interpreter, real, *params.args]
    directory, _, name = real.rpartition("/")
    # the script runs as whoever logged in (or root with sudo): nobody else may be able to swap it
    # between upload and run, so remote_dir's path must be root's (or the sudo caller's)
    check = safefile.check_argv(directory or "/", name)
    ops: list[BatchOp] = [Cmd(check, sudo=params.sudo),
                          Put(path, params.script.encode(), mode=0o700),
                          Cmd(argv, timeout=params.timeout_s, check=False, sudo=params.sudo),
                          Cmd(["rm", "-f", "--", real], check=False, sudo=params.sudo)]
    try:  # check, upload, run and remove in one session
        results = conn.run_batch(ops)
    except BaseException as exc:  # the batch stopped (timeout, lost connection): remove the script on its own
        if isinstance(exc, CommandFailed) and exc.argv == check:  # refused: nothing was uploaded
            raise StepFailed(f"{host}: refusing to upload the script to {params.remote_dir}: "
                             + exc.stderr.strip()[-300:]) from None
        with contextlib.suppress(Exception):  # the batch's own error is the one to report
            conn.remove(path)
        raise
    removed = cast(CommandResult, results[3])
    if not removed.ok:
        conn.remove(path)
    return _finish(ctx, host, argv, cast(CommandResult, results[2]), params)


@planner("host.command")
def plan_command(ctx: RunContext, params: CommandParams, host: str) -> list[str]:
    skip = _skip_reason(ctx.host(host), params)
    return [f"skip ({skip})" if skip else "run " + shlex.join(params.argv)]


@planner("host.script")
def plan_script(ctx: RunContext, params: ScriptParams, host: str) -> list[str]:
    skip = _skip_reason(ctx.host(host), params)
    lines = len(params.script.splitlines())
    return [f"skip ({skip})" if skip else f"run a {lines}-line script with {shlex.join(params.interpreter)}"]


def _guarded_work(ctx: RunContext, params: Guards, host: str) -> HasWork:
    """A generic step has no work when its guard (``creates``/``unless``) says so; without one, pitstop cannot
    tell (``only_if_changed:`` in the runbook says when it has work)."""
    skip = _skip_reason(ctx.host(host), params)
    if skip:
        return HasWork.no(f"guard: {skip}")
    if params.creates or params.unless:
        return HasWork.yes("its guard does not hold")
    return HasWork.unknown("a generic command without creates/unless or only_if_changed")


has_work("host.command")(_guarded_work)
has_work("host.script")(_guarded_work)
