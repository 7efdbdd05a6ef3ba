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


def test_a_config_host_entry_merges_with_its_inventory_host_field_by_field(tmp_path: Path) -> None:
    """Adding only `root:` for an inventory host used to replace it whole: address and port were lost."""
    import json

    from tests.conftest import run_cli

    (tmp_path / "hosts.ini").write_text("[web]\nweb-1 ansible_host=10.0.0.11 ansible_port=2222 ansible_user=deploy "
                                        "pitstop_sudo=yes\n")
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg.update(state_dir=str(tmp_path / "state"), inventory="hosts.ini")
    cfg["hosts"] = {"web-1": {"root": "/srv/app", "vars": {"tier": "front"}}}
    cfg["groups"] = {}
    cfg["maintenance"]["targets"] = "web"
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(cfg))
    host = load_config(str(path)).hosts["web-1"]
    assert (host.address, host.port, host.user, host.root, host.sudo) == ("10.0.0.11", 2222, "deploy", "/srv/app", True)
    assert host.sources["address"].startswith("inventory") and host.sources["root"] == "config"
    assert host.vars["tier"] == "front"
    res = run_cli("hosts", "list", "--env", str(path), "--json")
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["address"] == "10.0.0.11" and row["port"] == 2222 and row["sources"]["root"] == "config"
