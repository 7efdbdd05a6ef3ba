"""``pitstop plan`` never cuts a word (issue 19): at 80 columns on a terminal and piped, each step is a
block of lines wrapped at spaces, so step names, step kinds, hosts and paths stay whole; on a terminal
wide enough for the longest word of every column it is a table, whose cells are not cut either."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import ROOT, cli_on_tty, run_cli

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _tty(*args: str, columns: int) -> str:
    return ANSI.sub("", cli_on_tty(*args, columns=columns)).replace("\r", "")


@pytest.mark.parametrize("how", ["tty-80", "piped-80", "tty-250"])
def test_plan_never_cuts_a_word(make_env: Any, how: str) -> None:
    env = str(make_env())
    kind, columns = how.split("-")
    res = run_cli("plan", "--env", env, "--runbook", "monthly", "--json")
    steps = json.loads(res.stdout)["steps"]
    if kind == "tty":
        text = _tty("plan", "--env", env, "--runbook", "monthly", columns=int(columns))
    else:
        res = run_cli("plan", "--env", env, "--runbook", "monthly", env={"COLUMNS": columns})
        assert res.returncode == 0, res.stderr
        text = res.stdout
    split = re.compile(r"[\s│┃|,()]+")
    words = {w for s in steps for f in [s["label"], s["uses"], *s["hosts"], *s["would"]] for w in split.split(f)}
    tokens = set(split.split(text))
    cut = sorted(w for w in words if w and w not in tokens)
    assert cut == [], f"cut at {how}: {cut}\n{text}"
    if how == "tty-250":
        assert "┃ phase" in text  # wide enough: the table
    else:
        assert "┃" not in text and "│" not in text
    if how == "tty-80":  # wrapped at spaces to the width; only a word longer than the line exceeds it
        assert all(len(x) <= 80 or " " not in x.strip() for x in text.splitlines() if not x.startswith("config:"))
    assert "inside the window:" in text


@pytest.mark.parametrize("how", ["tty-80", "piped-80"])
def test_notices_plan_never_cuts_a_notice_or_channel_name(tmp_path: Any, how: str) -> None:
    import yaml

    doc = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    doc.update(state_dir=str(tmp_path / "state"))
    env = tmp_path / "env.yaml"
    env.write_text(yaml.safe_dump(doc, sort_keys=False))
    if how == "tty-80":
        text = _tty("notices", "plan", "--env", str(env), columns=80)
    else:
        res = run_cli("notices", "plan", "--env", str(env), env={"COLUMNS": "80"})
        assert res.returncode == 0, res.stderr
        text = res.stdout
    rows = json.loads(run_cli("notices", "plan", "--env", str(env), "--json").stdout)
    tokens = set(re.split(r"[\s│┃|]+", text))
    names = {r["notice"] for r in rows} | {r["channel"] for r in rows}
    assert names and names <= tokens, sorted(names - tokens)
