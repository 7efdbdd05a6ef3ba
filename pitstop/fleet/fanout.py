"""Fan a host step out over a fleet: concurrency, rolling batches, canary, error threshold.

* ``max_concurrency`` hosts run at once (a thread pool inside the stage: never one Prefect task per
  command or per host).
* ``serial`` splits the hosts into rolling batches: ``1``, ``10%`` or a list such as
  ``[1, 5, "25%"]`` (the last size repeats); a batch starts only when the previous one finished.
* ``canary: true`` runs the first host alone first; if it fails nothing else starts.
* ``max_errors`` (a count or a percentage of the hosts) is how many failed hosts are tolerated;
  once more fail, **no new host starts** (hosts already running finish) and the remaining hosts are
  reported as skipped. Unset: every host is tried.

Every host gets a :class:`HostResult` (status, exit code, stdout/stderr tails, duration, commands).
"""

from __future__ import annotations

import gc
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import FleetConfig
from ..errors import CommandFailed
from ..model import HostResult, Status, StepOutcome

if TYPE_CHECKING:
    from ..context import RunContext
    from ..plan import PlannedStep

TAIL = 500


def _size(spec: int | str, total: int) -> int:
    if isinstance(spec, str):
        return max(1, math.ceil(total * float(spec.rstrip("%")) / 100))
    return max(1, spec)


def batches(total: int, serial: int | str | list[int | str] | None, canary: bool = False) -> list[int]:
    """Batch sizes (summing to ``total``): ``batches(10, [1, "20%"]) == [1, 2, 2, 2, 2, 1]``."""
    sizes: list[int] = []
    remaining = total
    if canary and remaining:
        sizes.append(1)
        remaining -= 1
    specs = serial if isinstance(serial, list) else [serial if serial is not None else total]
    i = 0
    while remaining > 0:
        spec = specs[min(i, len(specs) - 1)]
        n = min(remaining, _size(spec, total))
        sizes.append(n)
        remaining -= n
        i += 1
    return sizes


def error_limit(max_errors: int | str | None, total: int) -> int | None:
    """How many failed hosts are tolerated (``None``: no limit). ``10%`` of 25 hosts is 2."""
    if max_errors is None:
        return None
    if isinstance(max_errors, str):
        return math.floor(total * float(max_errors.rstrip("%")) / 100)
    return max_errors


def _freeze_startup_heap() -> None:
    """Once per process: move the objects alive so far (modules, config models ...) out of the cyclic
    garbage collector's reach (:func:`gc.freeze`). A fleet run allocates many short-lived paramiko
    objects; without this every full collection walks the whole startup heap again (~40 ms each here).
    Frozen objects are still freed by reference counting."""
    if gc.get_freeze_count() == 0:
        gc.freeze()


@dataclass
class FanoutResult:
    results: list[HostResult]
    stopped: str | None = None  # why hosts were left unstarted
    batches: list[int] = field(default_factory=list)

    def by_status(self, status: Status) -> list[HostResult]:
        return [r for r in self.results if r.status == status]

    @property
    def failed(self) -> list[HostResult]:
        return self.by_status(Status.FAILED)

    @property
    def skipped(self) -> list[HostResult]:
        return self.by_status(Status.SKIPPED)


def fan_out(
    hosts: list[str],
    work: Callable[[str], HostResult],
    policy: FleetConfig,
    *,
    enforce: bool = True,
    on_done: Callable[[HostResult], None] | None = None,
) -> FanoutResult:
    """Run ``work(host)`` for every host per ``policy``. ``enforce=False`` ignores the error threshold
    and the canary (used to lift maintenance mode: every host must be tried)."""
    _freeze_startup_heap()
    sizes = batches(len(hosts), policy.serial, canary=policy.canary and enforce)
    limit = error_limit(policy.max_errors, len(hosts)) if enforce else None
    lock = threading.Lock()
    state: dict[str, Any] = {"failures": 0, "stopped": None}

    def one(host: str) -> HostResult:
        with lock:
            if state["stopped"]:
                return HostResult(
                    host=host, status=Status.SKIPPED, summary=f"not started: {state['stopped']}"
                )
        result = work(host)
        with lock:
            if result.status == Status.FAILED:
                state["failures"] += 1
                if limit is not None and state["failures"] > limit and not state["stopped"]:
                    state["stopped"] = (
                        f"{state['failures']} host(s) failed, more than max_errors={policy.max_errors}"
                    )
        if on_done is not None:
            on_done(result)
        return result

    results: list[HostResult] = []
    pos = 0
    workers = max(1, min(policy.max_concurrency, max(sizes, default=1)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pitstop-host") as pool:
        for i, size in enumerate(sizes):
            batch = hosts[pos : pos + size]
            pos += size
            results += list(pool.map(one, batch))
            if i == 0 and enforce and policy.canary and results and results[0].status == Status.FAILED:
                with lock:
                    state["stopped"] = state["stopped"] or f"canary host {results[0].host} failed"
    return FanoutResult(results=results, stopped=state["stopped"], batches=sizes)


# -- the executor's host steps -----------------------------------------------------------------------------
def host_result(ctx: RunContext, host: str, call: Callable[[], StepOutcome]) -> HostResult:
    """Run one host's part of a step and describe it (never raises)."""
    t0 = time.monotonic()
    conn: Any = None
    seen = 0
    try:
        conn = ctx.host(host)
        seen = len(getattr(conn, "history", ()))
        out = call()
        res = HostResult(
            host=host,
            status=Status.SUCCEEDED,
            changed=out.changed,
            summary=ctx.redact(out.summary),
            data=out.data,
        )
    except Exception as exc:  # noqa: BLE001 - per-host failures are collected
        data: dict[str, Any] = {}
        if isinstance(exc, CommandFailed):
            data = {"exit_code": exc.exit_code_seen, "stderr_tail": ctx.redact(exc.stderr[-TAIL:])}
        res = HostResult(
            host=host, status=Status.FAILED, error=ctx.redact(str(exc) or type(exc).__name__), data=data
        )
    res.duration_s = round(time.monotonic() - t0, 3)
    history = list(getattr(conn, "history", ()))[seen:]
    res.commands = [
        {
            **c,
            "stdout_tail": ctx.redact(c.get("stdout_tail", ""))[-TAIL:],
            "stderr_tail": ctx.redact(c.get("stderr_tail", ""))[-TAIL:],
        }
        for c in history
    ]
    if res.commands and "exit_code" not in res.data:
        res.data = {**res.data, "exit_code": res.commands[-1].get("exit_code")}
    return res


def run_step_on_hosts(
    ctx: RunContext, planned: PlannedStep, func: Callable[..., StepOutcome], params: Any
) -> FanoutResult:
    from ..runbook import Stage

    policy = ctx.cfg.fleet
    enforce = planned.stage != Stage.MAINTENANCE_OFF  # lifting maintenance must reach every host
    with live_progress(planned.label, len(planned.hosts), policy.progress) as on_done:
        result = fan_out(
            planned.hosts,
            lambda h: host_result(ctx, h, lambda: func(ctx, params, h)),
            policy,
            enforce=enforce,
            on_done=on_done,
        )
    if result.stopped:
        ctx.event(
            "fleet.stopped",
            step=planned.label,
            reason=result.stopped,
            not_started=[r.host for r in result.skipped],
        )
    return result


@contextmanager
def live_progress(
    label: str, total: int, enabled: bool = True
) -> Iterator[Callable[[HostResult], None] | None]:
    """A rich progress bar on stderr while hosts finish (only on a terminal, only for >1 host)."""
    if not (enabled and total > 1 and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    failed = 0
    with Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total, failed=0)
        lock = threading.Lock()

        def done(r: HostResult) -> None:
            nonlocal failed
            with lock:
                failed += r.status == Status.FAILED
                progress.update(task, advance=1, failed=failed)

        yield done
