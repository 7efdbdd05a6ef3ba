"""Step dependencies: validation, parallel execution of a stage unit, and the critical path.

A step may carry an ``id`` and ``after: [ids]``. Inside a stage unit the executor starts a step as
soon as every step it depends on (within the unit) has succeeded, on a small thread pool, so
independent steps overlap. Steps that declare no ``after:`` depend on the previous step of their
stage in the same phase (runbook order: the conservative default); post-verification steps are
read-only and depend on nothing unless they say so. Units themselves stay sequential (one Prefect
task per unit), so the in-window time is the sum over units of each unit's longest path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .placement import placement_of, run_rank

if TYPE_CHECKING:
    from .errors import Problem
    from .plan import PlannedStep
    from .registry import StepInfo
    from .runbook_model import Runbook
    from .yamlfile import YamlDoc

MAX_PARALLEL_STEPS = 8  # steps of one unit running at once (host steps fan out further per host)


# -- validation (runbook load) ---------------------------------------------------------------------
def dependency_problems(rb: Runbook, doc: YamlDoc, infos: dict[str, StepInfo]) -> list[Problem]:
    """Duplicate ids, unknown ``after`` ids, cycles, and dependencies on steps that run later."""
    problems: list[Problem] = []
    where: dict[str, tuple[int, int]] = {}
    for si, stage in enumerate(rb.stages):
        for ti, spec in enumerate(stage.steps):
            if spec.id is None:
                continue
            if spec.id in where:
                problems.append(doc.problem(["stages", si, "steps", ti, "id"], f"step id {spec.id!r} is used twice"))
            else:
                where[spec.id] = (si, ti)
    edges: dict[str, list[str]] = {}
    for si, stage in enumerate(rb.stages):
        for ti, spec in enumerate(stage.steps):
            for k, dep in enumerate(spec.after or []):
                loc = ["stages", si, "steps", ti, "after", k]
                if dep not in where:
                    known = ", ".join(sorted(where)) or "none"
                    problems.append(doc.problem(loc, f"after: unknown step id {dep!r} (ids: {known})"))
                    continue
                if spec.id is not None:
                    edges.setdefault(spec.id, []).append(dep)
                dsi, dti = where[dep]
                dspec = rb.stages[dsi].steps[dti]
                if spec.uses in infos and dspec.uses in infos:
                    mine = run_rank(stage.name, placement_of(stage.name, spec, infos[spec.uses])[1])
                    theirs = run_rank(rb.stages[dsi].name, placement_of(rb.stages[dsi].name, dspec,
                                                                        infos[dspec.uses])[1])
                    if theirs > mine:
                        problems.append(doc.problem(loc, f"after: {dep!r} runs later than this step "
                                                         f"({rb.stages[dsi].name.value}), so it cannot come first"))
    cycle = find_cycle(edges)
    if cycle:
        si, ti = where[cycle[0]]
        problems.append(doc.problem(["stages", si, "steps", ti, "after"],
                                    "dependency cycle: " + " → ".join([*cycle, cycle[0]])))
    return problems


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """One cycle of the graph ``node -> [deps]`` as a node list, or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in edges.get(n, []):
            if state.get(d) == 1:
                return stack[stack.index(d):]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


# -- planning ---------------------------------------------------------------------------------------
def unit_deps(unit: Sequence[PlannedStep]) -> dict[str, list[str]]:
    """Dependencies of each step restricted to the unit (earlier units have finished already)."""
    ids = {s.id for s in unit}
    return {s.id: [d for d in s.after if d in ids] for s in unit}


def longest_path(unit: Sequence[PlannedStep], cost: Callable[[PlannedStep], float]) -> tuple[float, list[str]]:
    """Length and step ids of the costliest dependency chain of a unit (steps are in plan order)."""
    deps = unit_deps(unit)
    best: dict[str, tuple[float, list[str]]] = {}
    for s in topo_order(unit, deps):
        prev = max((best[d] for d in deps[s.id] if d in best), key=lambda b: b[0], default=(0.0, []))
        best[s.id] = (prev[0] + cost(s), [*prev[1], s.id])
    return max(best.values(), key=lambda b: b[0], default=(0.0, []))


def topo_order(unit: Sequence[PlannedStep], deps: dict[str, list[str]]) -> list[PlannedStep]:
    """The unit's steps, each after its dependencies (stable: plan order where free)."""
    order: list[PlannedStep] = []
    placed: set[str] = set()
    rest = list(unit)
    while rest:
        ready = [s for s in rest if all(d in placed for d in deps[s.id])] or rest[:1]  # cycles are refused at load
        for s in ready:
            rest.remove(s)
            placed.add(s.id)
            order.append(s)
    return order


# -- execution --------------------------------------------------------------------------------------
@dataclass
class GraphRun:
    ok: bool = True
    not_started: list[PlannedStep] = field(default_factory=list)


def run_graph(unit: Sequence[PlannedStep], run_one: Callable[[PlannedStep], bool], *,
              keep_going: bool = False, max_workers: int = MAX_PARALLEL_STEPS) -> GraphRun:
    """Run the steps of one unit as their dependencies allow, ``max_workers`` at a time.

    After a failure nothing new starts (steps already running finish) unless ``keep_going``
    (post-verification: every check runs, the report must list every difference).
    """
    deps = unit_deps(unit)
    pending = list(unit)
    done: set[str] = set()
    result = GraphRun()
    if len(unit) <= 1:  # nothing to overlap: no thread
        result.ok = all(run_one(s) for s in unit)
        return result
    lock = threading.Lock()
    running: dict[Future[bool], PlannedStep] = {}
    with ThreadPoolExecutor(max_workers=min(max_workers, len(unit)), thread_name_prefix="pitstop-step") as pool:
        while pending or running:
            if result.ok or keep_going:
                for s in [s for s in pending if all(d in done for d in deps[s.id])]:
                    pending.remove(s)
                    running[pool.submit(run_one, s)] = s
            if not running:
                break  # a failure stopped new starts, or the rest depends on failed steps
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                s = running.pop(fut)
                ok = _ok(fut)
                with lock:
                    if ok or keep_going:
                        done.add(s.id)
                    if not ok:
                        result.ok = False
    result.not_started = pending
    return result


def _ok(fut: Future[Any]) -> bool:
    try:
        return bool(fut.result())
    except Exception:  # noqa: BLE001 - run_one records its own failures; a crash is a failure
        return False
