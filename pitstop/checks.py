"""Check registration: a check returns a typed :class:`CheckResult` and is usable as a runbook step
named ``check.<name>`` (in preflight or post-verification). A failing check fails its step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from .errors import CheckFailed
from .model import CheckResult, CheckStatus, StepOutcome
from .registry import NoParams, Placement, Target, step

CHECKS: dict[str, Callable[..., CheckResult]] = {}


def check(name: str, *, params: type[BaseModel] = NoParams, target: Target = Target.NONE,
          default_group: str = "all") -> Callable[[Callable[..., CheckResult]], Callable[..., CheckResult]]:
    def deco(func: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        CHECKS[name] = func

        def as_step(ctx: Any, p: BaseModel, *host: str) -> StepOutcome:
            t0 = time.monotonic()
            result = func(ctx, p, *host)
            result.duration_s = round(time.monotonic() - t0, 3)
            ctx.event("check", name=name, host=host[0] if host else None, **result.model_dump(exclude={"name"}))
            if result.status == CheckStatus.FAIL:
                raise CheckFailed(f"check {name} failed: observed {result.observed!r}, expected {result.expected!r}")
            return StepOutcome(changed=False, summary=f"{result.status.value}: {result.observed}",
                               data={"check": result.model_dump()})

        as_step.__doc__ = func.__doc__
        step(f"check.{name}", params=params, placement=Placement.OUTSIDE, target=target,
             default_group=default_group)(as_step)
        return func

    return deco
