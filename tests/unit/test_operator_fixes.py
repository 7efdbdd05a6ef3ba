"""Small operator-facing fixes of issue 19, each reproduced."""

from __future__ import annotations

from pathlib import Path

import yaml

from pitstop.config import load_config
from tests.conftest import ROOT


def test_known_hosts_and_identity_resolve_under_the_state_dir(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["state_dir"] = str(tmp_path / "state")
    cfg["ssh"] = {"known_hosts": ["keys/known_hosts"], "identity_file": "keys/id_ed25519"}
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir("/")
    loaded = load_config(str(path))
    assert loaded.ssh.known_hosts == [str(tmp_path / "state" / "keys" / "known_hosts")]
    assert loaded.ssh.identity_file == str(tmp_path / "state" / "keys" / "id_ed25519")


def test_a_jump_host_connection_has_the_retry_hook() -> None:
    """``for_target`` copied the constructor by hand and forgot ``on_retry``: a transient failure through a
    jump host raised AttributeError instead of retrying."""
    from types import SimpleNamespace

    from pitstop.config.hosts import SshSettings
    from pitstop.connectors.ssh import SshConnection

    target = SimpleNamespace(label="bastion")
    conn = SshConnection.for_target(target, SshSettings())  # type: ignore[arg-type]
    seen = []
    conn._note_retry(SimpleNamespace(outcome=None, attempt_number=1, next_action=SimpleNamespace(sleep=0.1)))
    conn.on_retry = lambda **d: seen.append(d)
    conn._note_retry(SimpleNamespace(outcome=None, attempt_number=2, next_action=SimpleNamespace(sleep=0.1)))
    assert seen and seen[0]["host"] == "bastion"


def test_version_and_json_errors_from_validate(tmp_path: Path) -> None:
    import json

    from tests.conftest import run_cli

    ver = run_cli("--version")
    assert ver.returncode == 0 and ver.stdout.startswith("pitstop ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstate_dir: [\n")
    res = run_cli("validate", "--env", str(bad), "--json")
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["problems"][0]["file"] == str(bad)
