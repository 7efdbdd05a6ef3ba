"""The typed has-work answer: unknown counts as work; one answer from many (hosts, rules)."""

from __future__ import annotations

from pitstop.work import HasWork, Work, combine


def test_unknown_counts_as_work_and_no_does_not() -> None:
    assert HasWork.yes("x").counts and HasWork.unknown("x").counts and not HasWork.no("x").counts


def test_combine_prefers_yes_then_unknown_and_names_the_parts() -> None:
    parts = [("web-1", HasWork.no("nothing")), ("web-2", HasWork.unknown("cannot tell")),
             ("app-1", HasWork.yes("3 files"))]
    assert combine(parts) == HasWork(answer=Work.YES, why="app-1: 3 files")
    assert combine(parts[:2]) == HasWork(answer=Work.UNKNOWN, why="web-2: cannot tell")
    assert combine([parts[0], ("web-3", HasWork.no("nothing"))]) == HasWork.no("nothing")
    assert combine([]).answer == Work.NO
    many = [(f"h{i}", HasWork.yes("y")) for i in range(5)]
    assert combine(many).why.endswith("(+2 more)")
