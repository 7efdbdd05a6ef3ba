"""A generic command step: an argument list run on every host of a group, with expected exit codes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..context import RunContext
from ..errors import CommandFailed
from ..model import StepOutcome
from ..registry import Placement, Target, planner, step


class CommandParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    argv: list[str] = Field(min_length=1, description="program and arguments; never a shell string")
    expect_exit: list[int] = Field(default_factory=lambda: [0])
    timeout_s: float | None = Field(None, gt=0)
    sudo: bool = False


@step("host.command", params=CommandParams, placement=Placement.INSIDE, target=Target.HOSTS)
def host_command(ctx: RunContext, params: CommandParams, host: str) -> StepOutcome:
    """Run a command (argument list) on each host; fail on an unexpected exit code."""
    res = ctx.host(host).run(params.argv, timeout=params.timeout_s, check=False, sudo=params.sudo)
    ctx.event("command", host=host, argv=params.argv, exit_code=res.exit_code, duration_s=round(res.duration_s, 3),
              stdout_tail=res.stdout[-500:], stderr_tail=res.stderr[-500:])
    if res.exit_code not in params.expect_exit:
        raise CommandFailed(params.argv, res.exit_code, res.stderr, host)
    return StepOutcome(changed=True, summary=f"exit {res.exit_code}",
                       data={"exit_code": res.exit_code, "stdout_tail": res.stdout[-500:]})


@planner("host.command")
def plan_command(ctx: RunContext, params: CommandParams, host: str) -> list[str]:
    return ["run " + " ".join(params.argv)]
