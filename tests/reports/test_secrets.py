"""Canary secrets in every secret slot of the config never reach a file pitstop writes."""

from __future__ import annotations

from pathlib import Path

from .conftest import CANARIES


def _scan(root: Path) -> list[str]:
    hits = []
    needles = [v.encode() for v in CANARIES.values()]
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p}: {n.decode()}" for n in needles if n in data]
    return hits


def test_no_canary_in_run_folder_or_state_dir(monthly_run, emergency_run, secret_env, receiver):
    env_path, _ = secret_env
    state = env_path.parent / "state"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.name == "report.html" for p in files)
    assert _scan(monthly_run["run_dir"]) == []
    assert _scan(state) == []
    # Nor on the CLI's output.
    for run in (monthly_run, emergency_run):
        out = run["proc"].stdout + run["proc"].stderr
        assert not any(v in out for v in CANARIES.values())
    # The secrets were really used: the webhook received notifications carrying the token.
    _, received = receiver
    assert any(r["path"].startswith("/hook") and CANARIES["PITSTOP_T_HOOK_TOKEN"] in r["path"] for r in received)
