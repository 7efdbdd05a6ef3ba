"""Bad config and runbooks: exit 2, one message per problem with file:line, nothing executed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pitstop.config import load_config
from pitstop.errors import ConfigError, RunbookError
from pitstop.runbook import load_runbook
from tests.conftest import ROOT, run_cli

GOOD_CONFIG = (ROOT / "config" / "demo.yaml").read_text()
GOOD_RUNBOOK = (ROOT / "runbooks" / "monthly.yaml").read_text()


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_good_files_validate(tmp_path: Path) -> None:
    cfg = load_config(str(write(tmp_path, "c.yaml", GOOD_CONFIG)))
    rb = load_runbook(str(write(tmp_path, "r.yaml", GOOD_RUNBOOK)), cfg)
    assert rb.name == "monthly" and cfg.name == "demo"


def test_invalid_yaml_points_at_line(tmp_path: Path) -> None:
    text = GOOD_CONFIG.replace("  dbname: postgres", "  dbname: [postgres")
    p = write(tmp_path, "c.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(str(p))
    [problem] = exc.value.problems
    assert problem.file == str(p) and "invalid YAML" in problem.message
    assert problem.line is not None and problem.line >= line_of(text, "dbname: [postgres")


def test_wrong_type_and_missing_field(tmp_path: Path) -> None:
    text = GOOD_CONFIG.replace("  ttl_margin: 30m", "  ttl_margin: soon").replace("name: demo\n", "")
    p = write(tmp_path, "c.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(str(p))
    msgs = {(pr.where, pr.line): pr.message for pr in exc.value.problems}
    assert ("maintenance.ttl_margin", line_of(text, "ttl_margin")) in msgs
    assert "duration" in msgs[("maintenance.ttl_margin", line_of(text, "ttl_margin"))]
    assert any(w == "name" and "required" in m for (w, _), m in msgs.items())


def test_unknown_host_in_group(tmp_path: Path) -> None:
    text = GOOD_CONFIG.replace("web: [web-1, web-2]", "web: [web-1, web-9]")
    p = write(tmp_path, "c.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(str(p))
    [problem] = exc.value.problems
    assert problem.line == line_of(text, "web: [web-1, web-9]") and "web-9" in problem.message


def test_unknown_step_and_bad_params_and_unknown_group(tmp_path: Path) -> None:
    cfg = load_config(str(write(tmp_path, "c.yaml", GOOD_CONFIG)))
    text = (GOOD_RUNBOOK.replace("uses: database.vacuum_analyze", "uses: database.vacuum_everything")
            .replace("compress_after_days: 1,", "compress_after_days: lots,")
            .replace("targets: app", "targets: workers"))
    p = write(tmp_path, "r.yaml", text)
    with pytest.raises(RunbookError) as exc:
        load_runbook(str(p), cfg)
    by_line = {pr.line: pr.message for pr in exc.value.problems}
    assert len(exc.value.problems) == 3
    assert "unknown step 'database.vacuum_everything'" in by_line[line_of(text, "database.vacuum_everything")]
    assert "integer" in by_line[line_of(text, "compress_after_days: lots")]
    assert "unknown host group 'workers'" in by_line[line_of(text, "targets: workers")]


def test_stage_order_enforced(tmp_path: Path) -> None:
    data = yaml.safe_load(GOOD_RUNBOOK)
    data["stages"][0], data["stages"][1] = data["stages"][1], data["stages"][0]
    p = write(tmp_path, "r.yaml", yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(RunbookError) as exc:
        load_runbook(str(p))
    assert any("out of order" in pr.message for pr in exc.value.problems)


@pytest.mark.parametrize("case", ["yaml", "step", "type", "group"])
def test_cli_exit_2_and_nothing_executed(tmp_path: Path, case: str) -> None:
    state = tmp_path / "state"
    cfg_text = GOOD_CONFIG.replace("name: demo", f"name: demo\nstate_dir: {state}")
    rb_text = GOOD_RUNBOOK
    if case == "yaml":
        cfg_text = cfg_text.replace("  kind: local", "  kind: local\n    oops: [")
    elif case == "step":
        rb_text = rb_text.replace("uses: backup.verify", "uses: backup.verifyy")
    elif case == "type":
        rb_text = rb_text.replace("min_free_pct: 5", "min_free_pct: plenty")
    else:
        rb_text = rb_text.replace("targets: all", "targets: nowhere")
    c = write(tmp_path, "c.yaml", cfg_text)
    r = write(tmp_path, "r.yaml", rb_text)
    res = run_cli("run", "--env", str(c), "--runbook", str(r), "--engine", "local")
    assert res.returncode == 2, res.stderr
    bad = c if case == "yaml" else r
    assert f"{bad}:" in res.stderr, res.stderr
    assert "nothing was executed" in res.stderr
    assert "Traceback" not in res.stderr
    assert not state.exists(), "no state (database, hosts, runs) may be created for bad input"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "--no-such-option"], "No such option: --no-such-option"),
        (["validate"], "Missing option '--env'"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_cli_usage_errors_exit_2_without_a_traceback(args: list[str], expected: str) -> None:
    res = run_cli(*args, timeout=60)
    assert res.returncode == 2, res.stderr
    assert expected in res.stderr
    assert "Usage: " in res.stderr and "--help" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_every_command_says_which_config_and_runbook_it_loaded(tmp_path: Path) -> None:
    """``./config`` in the working directory is searched before the project's: the first lines say which."""
    import shutil

    from tests.conftest import ROOT

    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "demo.yaml", tmp_path / "config" / "demo.yaml")
    res = run_cli("validate", "--env", "demo", "--runbook", "monthly", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0] == (f"config: {(tmp_path / 'config' / 'demo.yaml').resolve()} "
                        f"(shadows {(ROOT / 'config' / 'demo.yaml').resolve()})")
    assert lines[1] == f"runbook: {(ROOT / 'runbooks' / 'monthly.yaml').resolve()}"
