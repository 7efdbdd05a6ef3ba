"""The purge's batch controller: size adapts to the batch duration, and any sign that the application
is hurt (blocked by us, waiting, or a statement stalled past max_app_stall_ms) shrinks the batch and
lengthens the pause; a quiet server lets the pause decay."""

from __future__ import annotations

from pitstop.cleanup.pacing import Controller, Impact
from pitstop.config.data import CleanupProfile


def test_size_follows_the_target_duration_with_bounded_growth() -> None:
    ctl = Controller(CleanupProfile(target_batch_ms=100, initial_batch=1000, max_batch=50000))
    ctl.observe(10, Impact(samples=5))  # 10x too fast: grows by at most 1.5x per batch
    assert ctl.size == 1500
    ctl.observe(400, Impact(samples=5))  # 4x too slow: halves at most
    assert ctl.size == 750


def test_a_stalled_application_statement_slows_the_purge() -> None:
    prof = CleanupProfile(target_batch_ms=100, initial_batch=1000, max_app_stall_ms=20)
    quiet, hurt = Controller(prof), Controller(prof)
    p_quiet = quiet.observe(100, Impact(samples=10, max_app_stall_ms=5))
    p_hurt = hurt.observe(100, Impact(samples=10, max_app_stall_ms=80))
    assert (quiet.size, p_quiet) == (1000, 0)
    assert hurt.size == 600 and p_hurt >= 100  # 0.6x the work, a pause at least as long as the batch
    for _ in range(30):  # the application recovers: the pause decays back to the profile's floor
        p_hurt = hurt.observe(100, Impact(samples=10))
    assert p_hurt < 1


def test_stall_feedback_can_be_switched_off() -> None:
    ctl = Controller(CleanupProfile(initial_batch=1000, max_app_stall_ms=None))
    assert ctl.observe(100, Impact(samples=10, max_app_stall_ms=10_000)) == 0 and ctl.size == 1000
