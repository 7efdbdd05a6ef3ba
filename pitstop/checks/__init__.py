"""Check registration: a check returns a typed :class:`CheckResult` and is usable as a runbook step
named ``check.<name>`` (in preflight or post-verification). A failing check fails its step.

Every result is recorded in the audit log as a ``check`` event (status, observed, expected, evidence,
duration), which is where the report reads it from. A check that *raises* (connection refused,
timeout) is recorded as a ``fail`` with the error as evidence, so an unreachable service after the
window marks the run ``failed_verification`` just like a wrong answer does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from ..errors import CheckFailed
from ..model import CheckResult, CheckStatus, StepOutcome
from ..registry import NoParams, Target, step

CHECKS: dict[str, Callable[..., CheckResult]] = {}


def verdict(ok: bool, warn: bool = False) -> CheckStatus:
    """``pass`` when ``ok``; otherwise ``warn`` if only a warning is due, else ``fail``."""
    if ok:
        return CheckStatus.PASS
    return CheckStatus.WARN if warn else CheckStatus.FAIL


def failure_message(name: str, result: CheckResult, host: str | None = None) -> str:
    where = f" on {host}" if host else ""
    msg = f"check {name}{where} failed: observed {result.observed!r}, expected {result.expected!r}"
    diff = result.evidence.get("differences")
    if diff:
        msg += f"; differences: {diff}"
    return msg


def run_check(name: str, func: Callable[..., CheckResult], ctx: Any, params: BaseModel,
              *host: str) -> CheckResult:
    """Run one check, turning an exception into a ``fail`` result, and record it in the audit log."""
    t0 = time.monotonic()
    try:
        result = func(ctx, params, *host)
    except Exception as exc:  # noqa: BLE001 - an unreachable service is a failed check, with evidence
        error = ctx.redact(f"{type(exc).__name__}: {exc}")
        result = CheckResult(name=name, status=CheckStatus.FAIL, observed=f"error: {error}",
                             expected="the check completes", evidence={"error": error})
    result.duration_s = round(time.monotonic() - t0, 3)
    ctx.event("check", name=name, host=host[0] if host else None, **result.model_dump(exclude={"name"}))
    if result.status == CheckStatus.FAIL:  # the on-call alert lists every failed check (executor._finish)
        ctx.state.failed_checks.append(ctx.redact(failure_message(name, result, host[0] if host else None)))
    return result


CheckFunc = Callable[..., CheckResult]


def check(name: str, *, params: type[BaseModel] = NoParams, target: Target = Target.NONE,
          default_group: str | Callable[[Any], str] = "all", generic: bool = False) -> Callable[[CheckFunc], CheckFunc]:
    def deco(func: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        CHECKS[name] = func

        def as_step(ctx: Any, p: BaseModel, *host: str) -> StepOutcome:
            result = run_check(name, func, ctx, p, *host)
            if result.status == CheckStatus.FAIL:
                raise CheckFailed(ctx.redact(failure_message(name, result, host[0] if host else None)))
            return StepOutcome(changed=False, summary=ctx.redact(f"{result.status.value}: {result.observed}"),
                               data={"check": result.model_dump(mode="json")})

        as_step.__doc__ = func.__doc__
        step(f"check.{name}", params=params, target=target, default_group=default_group, generic=generic)(as_step)
        return func

    return deco
