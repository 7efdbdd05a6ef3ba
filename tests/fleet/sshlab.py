"""A lab of real OpenSSH servers on loopback: several sshd processes, each listening on up to 16
addresses (127.0.x.y) with a generated host key, one generated user key in authorized_keys, and a
matching known_hosts file. Used by tests/fleet (session fixture) and bench/bench_fleet.py.

Runs Debian's /usr/sbin/sshd as root. Every sshd is restricted to curve25519 key exchange (the
post-quantum default costs much more client CPU and paramiko may not speak it) and gets
``SetEnv HOME=<empty dir>`` so no shell profile runs per command.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"
MAX_PER_SSHD = 16


@dataclass
class FakeHost:
    name: str
    address: str
    port: int
    sshd: Sshd

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.address}]:{self.port} {self.sshd.host_pub}"


@dataclass
class Sshd:
    dir: Path
    port: int
    addresses: list[str]
    proc: subprocess.Popen[bytes]
    host_key: Path
    hosts: list[FakeHost] = field(default_factory=list)

    @property
    def host_pub(self) -> str:
        return " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])

    @property
    def log(self) -> str:
        p = self.dir / "sshd.log"
        return p.read_text() if p.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _addresses() -> itertools.chain[str]:
    return itertools.chain.from_iterable((f"127.0.{b}.{c}" for c in range(2, 255)) for b in range(0, 250))


def keygen(path: Path, comment: str = "pitstop-lab") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _free_port(addresses: list[str]) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        ok = True
        for a in addresses[1:]:
            with socket.socket() as s:
                try:
                    s.bind((a, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free port")


class SshLab:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        self.home = root / "empty-home"
        self.home.mkdir(exist_ok=True)
        self.user_key = keygen(root / "id_ed25519", "pitstop-lab-user")
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text(self.user_key.with_suffix(".pub").read_text())
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("")
        self.ssh_config = root / "ssh_config"  # empty: tests never read the real ~/.ssh/config
        self.ssh_config.write_text("")
        self.instances: list[Sshd] = []
        self._addr = _addresses()
        self._n = 0

    # -- servers ------------------------------------------------------------------------------------
    def start(
        self, count: int, prefix: str = "host", trusted: bool = True, extra: str = ""
    ) -> list[FakeHost]:
        """``count`` fake hosts (as many sshd processes as needed). ``trusted``: pin their keys."""
        hosts: list[FakeHost] = []
        while len(hosts) < count:
            n = min(MAX_PER_SSHD, count - len(hosts))
            sshd = self._start_sshd([next(self._addr) for _ in range(n)], extra)
            for addr in sshd.addresses:
                h = FakeHost(f"{prefix}-{len(hosts) + 1}", addr, sshd.port, sshd)
                sshd.hosts.append(h)
                hosts.append(h)
        if trusted:
            with self.known_hosts.open("a") as fh:
                fh.writelines(h.known_hosts_line + "\n" for h in hosts)
        return hosts

    def _start_sshd(self, addresses: list[str], extra: str) -> Sshd:
        self._n += 1
        d = self.root / f"sshd-{self._n}"
        d.mkdir()
        host_key = keygen(d / "ssh_host_ed25519_key", f"sshd-{self._n}")
        port = _free_port(addresses)
        listen = "".join(f"ListenAddress {a}:{port}\n" for a in addresses)
        # ``extra`` comes first: for most sshd keywords the first value wins.
        (d / "sshd_config").write_text(f"""{extra}
{listen}HostKey {host_key}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {self.authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org
SetEnv HOME={self.home}
PermitUserRC no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 200
MaxSessions 64
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
        check = subprocess.run([SSHD, "-t", "-f", str(d / "sshd_config")], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd config invalid: {check.stderr}")
        proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")], stdin=subprocess.DEVNULL
        )
        sshd = Sshd(d, port, addresses, proc, host_key)
        self.instances.append(sshd)
        deadline = time.monotonic() + 15
        for a in addresses:
            while True:
                try:
                    socket.create_connection((a, port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"sshd did not start: {sshd.log}") from None
                    time.sleep(0.02)
        return sshd

    def stop(self) -> None:
        for s in self.instances:
            s.stop()
        self.instances.clear()

    # -- pitstop configuration ------------------------------------------------------------------------
    def ssh_settings(self, **over: Any) -> dict[str, Any]:
        return {
            "known_hosts": [str(self.known_hosts)],
            "identity_file": str(self.user_key),
            "user": "root",
            "ssh_config": str(self.ssh_config),
            "agent": False,
            "connect_timeout": 5,
            "connect_retries": 3,
            "keepalive": 15,
            **over,
        }

    def host_entries(self, hosts: list[FakeHost], roots: Path | None = None) -> dict[str, dict[str, Any]]:
        """``transport: ssh`` host entries; with ``roots`` each host gets its own root directory."""
        out = {}
        for h in hosts:
            entry: dict[str, Any] = {"transport": "ssh", "address": h.address, "port": h.port}
            if roots is not None:
                (roots / h.name).mkdir(parents=True, exist_ok=True)
                entry["root"] = str(roots / h.name)
            out[h.name] = entry
        return out

    def config(
        self, hosts: list[FakeHost], state_dir: Path, roots: Path | None = None, **extra: Any
    ) -> dict[str, Any]:
        """A pitstop environment config dict with these hosts (database is a placeholder)."""
        return {
            "name": "fleet",
            "state_dir": str(state_dir),
            "database": {"host": "127.0.0.1"},
            "ssh": self.ssh_settings(),
            "hosts": self.host_entries(hosts, roots),
            "groups": {"fleet": [h.name for h in hosts]},
            **extra,
        }


def environ_without_agent() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
