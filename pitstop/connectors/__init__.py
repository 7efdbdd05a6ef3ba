"""Transports: hosts (local sandbox, SSH), PostgreSQL, storage."""

from __future__ import annotations

from ..config import EnvironmentConfig
from .base import Connection


def connect_host(cfg: EnvironmentConfig, name: str) -> Connection:
    """A connection to host ``name``; SSH connects lazily on first use."""
    host = cfg.hosts[name]
    if host.transport == "local":
        from .local import LocalConnection

        assert host.root is not None
        return LocalConnection(name, cfg.resolve(host.root))
    from .ssh import SshConnection  # imported lazily: paramiko is only needed for SSH hosts

    return SshConnection(name, host, cfg.ssh, hosts=cfg.hosts)
