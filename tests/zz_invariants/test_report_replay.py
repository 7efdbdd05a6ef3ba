"""The report invariant over the rest of the suite's run folders (the corpus of tests/reports/test_replay.py
is made there, through the CLI; this adds every other test's logs).

This package is collected last (``zz_``), so by the time it runs the rest of the suite has written
its run folders under pytest's base temp: every readable ``audit.jsonl`` found there (a seeded sample
when there are many) is replayed at its full length and at random prefixes — a run killed after that
event — through the builder, all three renderers and the seal, and each time the folder must hold
report.json/md/html and a manifest that ``report verify`` accepts.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pitstop.audit import verify_chain
from tests.reports.replay import lines_of, replay

SUITE_LOGS = 120  # a seeded sample of the suite's logs when there are more (CI time) ...
SUITE_PREFIXES = 6  # ... each at its full length and this many random prefixes


def test_every_suite_audit_log_gives_a_sealed_report(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    logs = [p for p in sorted(tmp_path_factory.getbasetemp().rglob("audit.jsonl")) if tmp_path not in p.parents]
    rng = random.Random(18)
    logs = sorted(rng.sample(logs, SUITE_LOGS)) if len(logs) > SUITE_LOGS else logs
    replayed = 0
    for log in logs:
        if verify_chain(log) is not None:
            continue  # a log a tamper test damaged on purpose
        lines = lines_of(log)
        cuts = sorted(set(rng.sample(range(1, len(lines) + 1), min(SUITE_PREFIXES, len(lines)))) | {len(lines)})
        for k in cuts:
            report, _ = replay(tmp_path / log.parent.name, lines[:k])
            assert report["audit"]["events"] == k, (log, k)
            replayed += 1
    if not logs:
        pytest.skip("no other test wrote a run folder (run with the rest of the suite)")
    assert replayed >= len(logs)
