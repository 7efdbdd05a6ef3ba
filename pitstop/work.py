"""Whether a step has work, from facts: the typed answer the window and backup decisions are built on.

A step registers a read-only probe with :func:`pitstop.registry.has_work`; it answers ``yes``, ``no`` or
``unknown`` with a short why. ``unknown`` counts as work (the safe side): a step that cannot tell is
treated as one that will change something. See docs/window.md ("A window only when needed").
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Work(StrEnum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


class HasWork(BaseModel):
    answer: Work
    why: str = ""

    @property
    def counts(self) -> bool:
        """Whether this answer counts as work: yes, and unknown (the safe side)."""
        return self.answer != Work.NO

    @classmethod
    def yes(cls, why: str) -> HasWork:
        return cls(answer=Work.YES, why=why)

    @classmethod
    def no(cls, why: str) -> HasWork:
        return cls(answer=Work.NO, why=why)

    @classmethod
    def unknown(cls, why: str) -> HasWork:
        return cls(answer=Work.UNKNOWN, why=why)


def combine(parts: list[tuple[str, HasWork]]) -> HasWork:
    """One answer from several (per host, per rule): yes if any is yes, else unknown if any is, else no.
    The why names the parts that decided it (``web-1: 3 log file(s) to compress``)."""
    if not parts:
        return HasWork.no("nothing to act on")
    for answer in (Work.YES, Work.UNKNOWN):
        hits = [f"{name}: {w.why}" if name else w.why for name, w in parts if w.answer == answer]
        if hits:
            more = f" (+{len(hits) - 3} more)" if len(hits) > 3 else ""
            return HasWork(answer=answer, why="; ".join(hits[:3]) + more)
    whys = list(dict.fromkeys(w.why for _, w in parts))
    return HasWork.no("; ".join(whys[:3]) + (f" (+{len(whys) - 3} more)" if len(whys) > 3 else ""))


class StepWork(BaseModel):
    """One planned step's answer, as the decision records it."""

    id: str
    label: str
    uses: str
    exclusive: bool  # placed inside the maintenance window
    destructive: bool
    work: HasWork


class Decision(BaseModel):
    """Whether this run needs the maintenance window and the backup, and why (the ``window.decision`` event)."""

    window_needed: bool
    window_why: str
    opened_earlier: bool = False  # resumed: an earlier attempt switched maintenance on, so the window path runs
    backup_when: str = "always"
    backup_needed: bool = True
    backup_why: str = "backup.when: always"
    steps: list[StepWork] = Field(default_factory=list)

    def of(self, step_id: str) -> StepWork | None:
        return next((s for s in self.steps if s.id == step_id), None)


NO_WINDOW = "no window needed"
