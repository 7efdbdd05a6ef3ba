"""Where hosts come from and how to reach them.

* Hosts come from the config's ``hosts``/``groups`` and from an **Ansible inventory** merged into
  them when the config is loaded (:mod:`pitstop.config.inventory`).
* The OpenSSH client config (``~/.ssh/config``: ``Host`` aliases, ``HostName``, ``User``, ``Port``,
  ``IdentityFile``, ``ProxyJump``) is honoured when a host is resolved to an :class:`SshTarget`.
  Precedence: the host's own entry, then the SSH config, then the ``ssh:`` defaults.
"""

from __future__ import annotations

import getpass
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import HostConfig, SshSettings
from ..errors import ConfigError

if TYPE_CHECKING:
    import paramiko


# -- OpenSSH client config and target resolution ----------------------------------------------------------
_ssh_configs: dict[tuple[str, str], paramiko.SSHConfig] = {}
_ssh_lock = threading.Lock()


def ssh_config(path: str) -> paramiko.SSHConfig | None:
    import paramiko

    p = Path(path).expanduser()
    if not p.is_file():
        return None
    import hashlib

    key = (str(p), hashlib.sha1(p.read_bytes(), usedforsecurity=False).hexdigest())
    with _ssh_lock:
        if key not in _ssh_configs:
            _ssh_configs.clear()
            _ssh_configs[key] = paramiko.SSHConfig.from_path(str(p))
        return _ssh_configs[key]


@dataclass(frozen=True)
class SshTarget:
    label: str  # the pitstop host name (or jump spec) used in messages
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    jump: SshTarget | None = None
    sudo: bool = False
    root: str | None = None

    def describe(self) -> str:
        via = f" via {self.jump.describe()}" if self.jump else ""
        return f"{self.user}@{self.hostname}:{self.port}{via}"


def resolve_target(
    name: str,
    host: HostConfig,
    settings: SshSettings,
    hosts: Mapping[str, HostConfig] | None = None,
    depth: int = 0,
) -> SshTarget:
    if depth > 5:
        raise ConfigError(f"{name}: jump host chain too long (a loop?)")
    alias = host.address or name
    opts: dict[str, Any] = {}
    conf = ssh_config(settings.ssh_config) if settings.use_ssh_config else None
    if conf is not None:
        opts = dict(conf.lookup(alias))
    identity = [host.identity_file] if host.identity_file else list(opts.get("identityfile") or [])
    if not identity and settings.identity_file:
        identity = [settings.identity_file]
    jump_spec = host.jump_host or opts.get("proxyjump") or (settings.jump_host if depth == 0 else None)
    jump = None
    if jump_spec and str(jump_spec).lower() != "none":
        jump = _resolve_jump(str(jump_spec), settings, hosts or {}, depth, name)
    return SshTarget(
        label=name,
        hostname=str(opts.get("hostname") or alias),
        port=int(host.port or opts.get("port") or settings.port),
        user=str(host.user or opts.get("user") or settings.user or getpass.getuser()),
        identity_files=tuple(str(Path(p).expanduser()) for p in identity),
        jump=jump,
        sudo=settings.sudo if host.sudo is None else host.sudo,
        root=host.root,
    )


def _resolve_jump(
    spec: str, settings: SshSettings, hosts: Mapping[str, HostConfig], depth: int, origin: str
) -> SshTarget:
    """``[user@]host[:port]``, comma-separated for a chain (OpenSSH ProxyJump syntax)."""
    *before, last = [s.strip() for s in spec.split(",") if s.strip()]
    m = re.fullmatch(r"(?:([^@\s]+)@)?(\[[^\]]+\]|[^:\s]+)(?::(\d+))?", last)
    if not m:
        raise ConfigError(f"{origin}: bad jump host {last!r} (expected [user@]host[:port])")
    user, hostpart, port = m.group(1), m.group(2).strip("[]"), m.group(3)
    base = hosts.get(hostpart) or HostConfig(transport="ssh", address=hostpart, port=None)
    jump_host = ",".join(before) or base.jump_host
    cfg = base.model_copy(
        update={
            "user": user or base.user,
            "port": int(port) if port else base.port,
            "jump_host": jump_host,
            "root": None,
            "sudo": False,
        }
    )
    return resolve_target(hostpart, cfg, settings, hosts, depth + 1)
