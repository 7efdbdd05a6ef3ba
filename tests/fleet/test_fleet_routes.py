"""How hosts are reached: jump hosts (ProxyJump over a direct-tcpip channel), ~/.ssh/config
aliases, and Ansible inventories (YAML and INI) imported as is — all over real sshd."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pitstop.config import HostConfig, SshSettings, load_config
from pitstop.config.inventory import load_inventory
from pitstop.connectors import connect_host
from pitstop.connectors.ssh import SshConnection
from pitstop.errors import ConfigError, ConnectorError, HostKeyError
from tests.conftest import run_cli
from tests.fleet.sshlab import FakeHost, SshLab


@pytest.fixture(scope="module")
def bastions(ssh_lab: SshLab) -> dict[str, FakeHost]:
    ok = ssh_lab.start(1, prefix="bastion", extra="LogLevel DEBUG1")[0]
    closed = ssh_lab.start(1, prefix="closed-bastion", extra="AllowTcpForwarding no")[0]
    stranger = ssh_lab.start(1, prefix="unknown-bastion", trusted=False)[0]
    return {"ok": ok, "closed": closed, "stranger": stranger}


def via(lab: SshLab, target: FakeHost, bastion: FakeHost) -> SshConnection:
    settings = SshSettings(**lab.ssh_settings(jump_host=f"root@{bastion.address}:{bastion.port}"))
    return SshConnection(target.name, HostConfig(address=target.address, port=target.port), settings)


def test_jump_host(ssh_lab: SshLab, fleet: list[FakeHost], bastions: dict[str, FakeHost]) -> None:
    with via(ssh_lab, fleet[6], bastions["ok"]) as conn:
        assert conn.run(["echo", "through the bastion"]).stdout == "through the bastion\n"
        assert conn.target.jump is not None and conn.target.jump.hostname == bastions["ok"].address
    # the bastion's sshd opened the channel to the target (its log names the forward)
    assert f"target {fleet[6].address} port {fleet[6].port}" in bastions["ok"].sshd.log
    with pytest.raises(ConnectorError, match="refused to open a channel"), \
            via(ssh_lab, fleet[6], bastions["closed"]) as conn:
        conn.run(["true"])
    with pytest.raises(HostKeyError, match="not known"), via(ssh_lab, fleet[6], bastions["stranger"]) as conn:
        conn.run(["true"])


def test_ssh_config_alias_and_proxyjump(ssh_lab: SshLab, fleet: list[FakeHost], bastions: dict[str, FakeHost],
                                        tmp_path: Path, write_env) -> None:  # type: ignore[no-untyped-def]
    b, t = bastions["ok"], fleet[7]
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"""Host jumpbox
    HostName {b.address}
    Port {b.port}
    User root
    IdentityFile {ssh_lab.user_key}
Host app-alias
    HostName {t.address}
    Port {t.port}
    User root
    IdentityFile {ssh_lab.user_key}
Host app-via-jump
    HostName {t.address}
    Port {t.port}
    ProxyJump jumpbox
""")
    cfg = ssh_lab.config([], tmp_path / "state")
    cfg["ssh"].update(ssh_config=str(ssh_config), identity_file=None, user="nobody")
    cfg["hosts"] = {"app-alias": {"transport": "ssh"}, "app-via-jump": {"transport": "ssh", "user": "root",
                                                                      "identity_file": str(ssh_lab.user_key)}}
    cfg["groups"] = {}
    env = load_config(str(write_env(cfg)))
    with connect_host(env, "app-alias") as conn:
        assert conn.run(["echo", "alias"]).stdout == "alias\n"
    with connect_host(env, "app-via-jump") as conn:
        assert conn.run(["echo", "jumped"]).stdout == "jumped\n"
        assert conn.target.jump.hostname == b.address  # type: ignore[attr-defined]


YAML_INVENTORY = """all:
  vars:
    ansible_user: root
  children:
    web:
      hosts:
        web-a: {{ansible_host: {a.address}, ansible_port: {a.port}}}
        "web-b:{b.port}": {{ansible_host: {b.address}, tier: gold}}  # Ansible's host:port
    db:
      hosts:
        db-a: {{ansible_host: {c.address}, ansible_port: {c.port}, ansible_user: nobody}}
      vars:
        ansible_become: true
    prod:
      children:
        web:
        db:
"""

INI_INVENTORY = """# an Ansible INI inventory
[web]
web-a ansible_host={a.address} ansible_port={a.port}
web-b:{b.port} ansible_host={b.address} tier=gold

[db]
db-a ansible_host={c.address} ansible_port={c.port} ansible_user=nobody

[db:vars]
ansible_become=true

[prod:children]
web
db

[all:vars]
ansible_user=root
"""


@pytest.mark.parametrize("kind", ["yaml", "ini"])
def test_ansible_inventory(kind: str, ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path,
                           write_env) -> None:  # type: ignore[no-untyped-def]
    a, b, c = fleet[0], fleet[1], fleet[2]
    text = (YAML_INVENTORY if kind == "yaml" else INI_INVENTORY).format(a=a, b=b, c=c)
    inv_path = tmp_path / ("hosts.yml" if kind == "yaml" else "hosts")
    inv_path.write_text(text)
    cfg = ssh_lab.config([], tmp_path / "state", inventory=inv_path.name)  # relative to the config file
    cfg["ssh"].pop("user")
    cfg["groups"] = {}
    env = load_config(str(write_env(cfg)))
    assert env.groups == {"web": ["web-a", "web-b"], "db": ["db-a"], "prod": ["web-a", "web-b", "db-a"]}
    assert (env.hosts["web-a"].address, env.hosts["web-a"].port, env.hosts["web-a"].user) == (a.address, a.port,
                                                                                               "root")
    assert env.hosts["web-b"].vars == {"tier": "gold"}
    assert env.hosts["db-a"].user == "nobody" and env.hosts["db-a"].sudo is True
    for name in ("web-a", "web-b"):
        with connect_host(env, name) as conn:
            assert conn.run(["echo", name]).stdout == f"{name}\n"
    listed = json.loads(run_cli("hosts", "list", "--env", str(tmp_path / "fleet.yaml"), "-g", "prod",
                                "--json").stdout)
    assert [(r["name"], r["address"], r["port"], r["user"]) for r in listed] == [
        ("web-a", a.address, a.port, "root"), ("web-b", b.address, b.port, "root"),
        ("db-a", c.address, c.port, "nobody")]


def test_inventory_become_jump_and_connection(ssh_lab: SshLab, fleet: list[FakeHost],
                                              bastions: dict[str, FakeHost], tmp_path: Path,
                                              write_env) -> None:  # type: ignore[no-untyped-def]
    """Ansible's booleans (``no`` is a string to a YAML 1.2 loader, and not true), a ProxyJump in
    ``ansible_ssh_common_args`` used for real, and a non-SSH connection refused with a clear error."""
    t, b = fleet[5], bastions["ok"]
    inv = tmp_path / "hosts.yml"
    inv.write_text(f"""all:
  vars:
    ansible_user: root
  hosts:
    plain: {{ansible_host: {t.address}, ansible_port: {t.port}, ansible_become: no}}
    quoted: {{ansible_host: {t.address}, ansible_port: {t.port}, ansible_become: 'false'}}
    become: {{ansible_host: {t.address}, ansible_port: {t.port}, ansible_become: 'yes'}}
    jumped:
      ansible_host: {t.address}
      ansible_port: {t.port}
      ansible_ssh_common_args: '-o StrictHostKeyChecking=no -o ProxyJump=root@{b.address}:{b.port}'
""")
    cfg = ssh_lab.config([], tmp_path / "state", inventory=inv.name)
    cfg["groups"] = {}
    env = load_config(str(write_env(cfg)))
    assert [env.hosts[h].sudo for h in ("plain", "quoted", "become")] == [False, False, True]
    assert "ansible_ssh_common_args" not in env.hosts["jumped"].vars
    with connect_host(env, "jumped") as conn:
        assert conn.run(["echo", "jumped"]).stdout == "jumped\n"
        assert conn.target.jump is not None and conn.target.jump.hostname == b.address  # type: ignore[attr-defined]
    assert f"target {t.address} port {t.port}" in b.sshd.log  # the bastion opened the channel
    for line, expected in (("      ansible_become: maybe", r"ansible_become: expected a boolean .*'maybe'"),
                           ("      ansible_connection: docker", r"ansible_connection=docker is not supported")):
        inv.write_text(f"all:\n  hosts:\n    odd:\n{line}\n")
        res = run_cli("validate", "--env", str(tmp_path / "fleet.yaml"))
        err = " ".join(res.stderr.split())  # the terminal wraps long lines
        assert res.returncode == 2, err
        assert "fleet.yaml:" in err and "hosts.yml" in err and "odd" in err and "nothing was executed" in err
        assert re.search(expected, err), err


def test_inventory_host_port_syntax(tmp_path: Path) -> None:
    p = tmp_path / "inv.ini"
    p.write_text("[web]\nweb[01:02]:2222 ansible_user=deploy\nweb9:2200 ansible_port=2201\n2001:db8::8\n")
    inv = load_inventory(p)
    assert inv.members("web") == ["web01", "web02", "web9", "2001:db8::8"]
    assert inv.vars_of("web02") == {"ansible_port": 2222, "ansible_user": "deploy"}
    assert inv.vars_of("web9")["ansible_port"] == 2201  # an explicit ansible_port wins
    assert inv.vars_of("2001:db8::8") == {}  # a bare IPv6 address has no port
    y = tmp_path / "inv.yml"
    y.write_text("all:\n  hosts:\n    '[2001:db8::7]:22':\n    'db1:5432': {ansible_user: pg}\n")
    inv = load_inventory(y)
    assert inv.vars_of("2001:db8::7") == {"ansible_port": 22}
    assert inv.vars_of("db1") == {"ansible_port": 5432, "ansible_user": "pg"}


def test_inventory_patterns_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "inv.ini"
    p.write_text("[web]\nweb[01:03].example ansible_user=deploy\n")
    inv = load_inventory(p)
    assert inv.members("web") == ["web01.example", "web02.example", "web03.example"]
    p.write_text("[web]\nweb-1 ansible_port\n")
    with pytest.raises(ConfigError, match=r"inv.ini:2: expected key=value"):
        load_inventory(p)


def test_inventory_errors_point_at_config(ssh_lab: SshLab, tmp_path: Path, write_env) -> None:  # type: ignore[no-untyped-def]
    cfg = ssh_lab.config([], tmp_path / "state", inventory="missing.ini")
    res = run_cli("validate", "--env", str(write_env(cfg)))
    assert res.returncode == 2
    assert "fleet.yaml:" in res.stderr and "missing.ini" in res.stderr
