"""Contract over every registered check: a documented step ``check.<name>`` with a strict params model,
placed outside the window, never destructive."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pitstop.checks import CHECKS
from pitstop.registry import Placement, load_plugins

STEPS = load_plugins()


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_every_check_is_a_documented_safe_step(name):
    info = STEPS[f"check.{name}"]
    assert info.description, f"check {name} has no docstring"
    assert info.placement == Placement.OUTSIDE and not info.destructive
    with pytest.raises(ValidationError):
        info.params.model_validate({"no_such_param_xyz": 1})


def test_issue_checks_are_registered():
    assert {"http", "tcp", "dns", "postgres_connect", "replication_lag", "sessions", "invalid_indexes", "sql_assert",
            "disk_free", "inodes_free", "service_active", "maintenance_off", "backup_verified", "data_snapshot",
            "data_parity"} <= set(CHECKS)
