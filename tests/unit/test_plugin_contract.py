"""A contract test over every registered plug-in (entry-point group ``pitstop.plugins``): it loads, names a
module or a Plugin, its state model is valid empty and rebuilds from an empty log, and its steps declare what
the engine needs (params model that refuses unknown keys, placement, target)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from pydantic import BaseModel, ValidationError

from pitstop.plugin import ENTRY_POINT_GROUP, Plugin, PluginState
from pitstop.registry import Placement, Target, load_plugins, plugins

# the plug-ins' steps, not the ones a test module registered for itself when the suite was collected
STEPS = {name: info for name, info in load_plugins().items()
         if not info.func.__module__.startswith(("tests.", "test_")) and not name.startswith("test.")}


def test_every_entry_point_is_loaded_once_in_name_order() -> None:
    names = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    assert [p.name for p in plugins()] == names
    assert {"backup", "maintenance_mode", "cleanup", "checks_postgres"} <= set(names)


@pytest.mark.parametrize("plugin", plugins(), ids=lambda p: p.name)
def test_every_plugin_state_is_valid_empty_and_rebuilds_from_nothing(plugin: Plugin) -> None:
    assert isinstance(plugin, Plugin)
    if plugin.state is None:
        return
    assert issubclass(plugin.state, PluginState)
    st = plugin.state()
    before = st.model_dump()
    st.rebuild([])
    assert st.model_dump() == before


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_step_declares_what_the_engine_needs(name: str) -> None:
    info = STEPS[name]
    assert issubclass(info.params, BaseModel) and isinstance(info.placement, Placement)
    assert isinstance(info.target, Target) and info.description, name
    with pytest.raises(ValidationError):
        info.params.model_validate({"no_such_param_xyz": 1})


def test_the_hooks_the_engine_relies_on_are_declared_by_their_plugins() -> None:
    by_name = {p.name: p for p in plugins()}
    assert type(by_name["maintenance_mode"]).safety_net is not Plugin.safety_net
    assert type(by_name["maintenance_mode"]).window_guard is not Plugin.window_guard
    assert type(by_name["backup"]).gate is not Plugin.gate
    assert "cleanup" in by_name["cleanup"].report_sections
