"""The options of one run (trigger, reason, overrides, rehearsal ...), as its first audit event records them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from .model import Trigger


@dataclass
class RunOptions:
    trigger: Trigger = Trigger.MANUAL
    reason: str = ""
    dry_run: bool = False
    accept_unverified_backup: bool = False
    override_blackout: bool = False
    rehearsal: bool = False  # a test of the runbook in production: customers hear nothing, everything is labelled
    expected_downtime: timedelta | None = None  # given for this run (pitstop emergency --expected-downtime)

    def to_record(self) -> dict[str, Any]:
        """Every option (each field of this class, typed by pydantic), as the audit log's first event carries
        it: what ``resume`` restores. ``expected_downtime_s`` is kept beside the ISO duration for readers."""
        rec: dict[str, Any] = _OPTIONS.dump_python(self, mode="json")
        rec["expected_downtime_s"] = self.expected_downtime.total_seconds() if self.expected_downtime else None
        return rec

    @classmethod
    def from_record(cls, started: dict[str, Any]) -> RunOptions:
        """The options of a run from its ``run.started`` data, validated field by field (ValidationError on
        a malformed record). Older logs: the flat fields, ``expected_downtime_s`` for the downtime."""
        opts = started.get("options")
        rec: dict[str, Any] = dict(opts if isinstance(opts, dict) else started)
        if rec.get("expected_downtime") is None and rec.get("expected_downtime_s"):
            rec["expected_downtime"] = rec["expected_downtime_s"]
        return _OPTIONS.validate_python({k: rec[k] for k in _OPTION_FIELDS if k in rec})


_OPTIONS: TypeAdapter[RunOptions] = TypeAdapter(RunOptions)
_OPTION_FIELDS = tuple(f.name for f in fields(RunOptions))
