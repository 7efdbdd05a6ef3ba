"""Ansible inventories as a source of hosts: ``inventory:`` in an environment config.

An existing Ansible inventory (YAML or INI; groups, ``children``, ``vars``, ``ansible_host``,
``ansible_port`` or ``host:port``, ``ansible_user``, ``ansible_become`` (Ansible's booleans:
yes/no, true/false, 1/0), ``ansible_ssh_private_key_file``, a ProxyJump (``-J`` or
``-o ProxyJump=``) in ``ansible_ssh_common_args``, numeric ranges such as ``web[01:20]``) is
merged into the config's ``hosts``/``groups`` as is by the loader; entries written in the pitstop
config win. A connection other than SSH (``ansible_connection=local``, ``docker`` ...) is refused with
a clear error rather than tried over SSH. How a host is then reached: :mod:`pitstop.fleet.inventory`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .hosts import HostConfig

if TYPE_CHECKING:
    from ..yamlfile import YamlDoc
    from .environment import EnvironmentConfig

SKIP_GROUPS = {"all", "ungrouped"}
CONNECTION_VARS = {
    "pitstop_root",
    "pitstop_sudo",
    "pitstop_user",
    "ansible_host",
    "ansible_ssh_host",
    "ansible_port",
    "ansible_ssh_port",
    "ansible_user",
    "ansible_ssh_user",
    "ansible_become",
    "ansible_ssh_private_key_file",
    "ansible_connection",
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
}


# -- Ansible inventory --------------------------------------------------------------------------------
@dataclass
class Inventory:
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)  # direct members
    children: dict[str, list[str]] = field(default_factory=dict)
    groupvars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_host(self, name: str, group: str | None, hvars: Mapping[str, Any] | None = None) -> None:
        self.hostvars.setdefault(name, {}).update(hvars or {})
        if group:
            members = self.groups.setdefault(group, [])
            if name not in members:
                members.append(name)

    def members(self, group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        """Hosts of ``group`` including those of its children (in order, no duplicates)."""
        if group == "all":
            return list(self.hostvars)
        out = list(self.groups.get(group, []))
        for child in self.children.get(group, []):
            if child not in seen:
                out += [h for h in self.members(child, seen | {group}) if h not in out]
        return out

    def vars_of(self, host: str) -> dict[str, Any]:
        """all vars < parent group vars < child group vars < host vars (Ansible's precedence)."""
        merged: dict[str, Any] = dict(self.groupvars.get("all", {}))
        depth = {g: self._depth(g) for g in self.groupvars if g != "all"}
        for g in sorted(depth, key=lambda g: (depth[g], g)):
            if host in self.members(g):
                merged.update(self.groupvars[g])
        merged.update(self.hostvars.get(host, {}))
        return merged

    def _depth(self, group: str, seen: frozenset[str] = frozenset()) -> int:
        parents = [p for p, kids in self.children.items() if group in kids and p not in seen]
        return 1 + max((self._depth(p, seen | {group}) for p in parents), default=0)


def expand_pattern(name: str) -> list[str]:
    """``web[01:03].example`` → web01.example, web02.example, web03.example."""
    m = re.search(r"\[(\d+):(\d+)\]", name)
    if not m:
        return [name]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    out = []
    for i in range(int(lo), int(hi) + 1):
        out += expand_pattern(name[: m.start()] + str(i).zfill(width) + name[m.end() :])
    return out


def _split_port(word: str) -> tuple[str, int | None]:
    """Ansible's ``host:port`` (``web[01:03]:2222``, ``[2001:db8::1]:22``); a bare IPv6 address has no port."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", word)
    if m:
        return m.group(1), int(m.group(2)) if m.group(2) else None
    m = re.fullmatch(r"(.+):(\d+)", word)
    if m and ":" not in re.sub(r"\[\d+:\d+\]", "", m.group(1)):
        return m.group(1), int(m.group(2))
    return word, None


def _parse_value(raw: str) -> Any:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    if raw.lower() in ("true", "yes"):
        return True
    if raw.lower() in ("false", "no"):
        return False
    return int(raw) if raw.isdigit() else raw


def parse_ini(text: str, source: str) -> Inventory:
    import shlex

    inv = Inventory()
    section, kind = "ungrouped", "hosts"
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            m = re.fullmatch(r"\[([^\]:]+)(?::(vars|children))?\]", stripped)
            if not m:
                raise ConfigError(f"{source}:{lineno}: bad section header {stripped!r}")
            section, kind = m.group(1), m.group(2) or "hosts"
            inv.groups.setdefault(section, [])
            continue
        try:
            words = shlex.split(stripped, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{source}:{lineno}: {exc}") from None
        if kind == "vars":
            key, sep, value = stripped.partition("=")
            if not sep:
                raise ConfigError(f"{source}:{lineno}: expected key=value in [{section}:vars]")
            inv.groupvars.setdefault(section, {})[key.strip()] = _parse_value(value)
        elif kind == "children":
            inv.children.setdefault(section, []).append(words[0])
        else:
            hvars = {}
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep:
                    raise ConfigError(
                        f"{source}:{lineno}: expected key=value after the host name, got {word!r}"
                    )
                hvars[key] = _parse_value(value)
            host, port = _split_port(words[0])
            if port is not None:
                hvars.setdefault("ansible_port", port)
            for name in expand_pattern(host):
                inv.add_host(name, None if section == "ungrouped" else section, hvars)
    return inv


def parse_yaml(text: str, source: str) -> Inventory:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe", pure=True).load(text) or {}
    except YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML inventory: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an inventory is a mapping of groups (all:, web: ...)")
    inv = Inventory()

    def group(name: str, body: Any) -> None:
        body = body or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: group {name!r} must be a mapping (hosts:, children:, vars:)")
        inv.groups.setdefault(name, [])
        for host, hvars in (body.get("hosts") or {}).items():
            bare, port = _split_port(str(host))
            hvars = dict(hvars or {})
            if port is not None:
                hvars.setdefault("ansible_port", port)
            for h in expand_pattern(bare):
                inv.add_host(h, name, hvars)
        if body.get("vars"):
            inv.groupvars.setdefault(name, {}).update(body["vars"])
        for child, child_body in (body.get("children") or {}).items():
            inv.children.setdefault(name, []).append(str(child))
            group(str(child), child_body)

    for name, body in data.items():
        group(str(name), body)
    return inv


def load_inventory(path: Path) -> Inventory:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read inventory {path}: {exc.strerror}") from None
    looks_yaml = path.suffix in (".yaml", ".yml") or re.match(
        r"\s*[A-Za-z0-9_-]+:\s*$", text.split("\n", 1)[0]
    )
    return parse_yaml(text, str(path)) if looks_yaml else parse_ini(text, str(path))


_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}
SSH_CONNECTIONS = {"ssh", "paramiko", "smart"}


def _ansible_bool(name: str, value: Any) -> bool:
    """Ansible's booleans: YAML inventories may hold ``no`` as a string (YAML 1.2), INI ones ``0``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}: expected a boolean (yes/no, true/false, 1/0), got {value!r}")


def _jump_from_common_args(args: str) -> str | None:
    """``-J spec`` or ``-o ProxyJump=spec`` in ``ansible_ssh_common_args`` (or ``ansible_ssh_extra_args``)."""
    import shlex

    words = shlex.split(args)
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if word == "-J" and nxt:
            return nxt
        if word.startswith("-J") and len(word) > 2:
            return word[2:]
        option = word[2:] if word.startswith("-o") and len(word) > 2 else (nxt if word == "-o" else "")
        key, sep, value = option.replace(" ", "=", 1).partition("=")
        if sep and key.lower() == "proxyjump" and value.strip():
            return value.strip()
    return None


def host_from_vars(hvars: Mapping[str, Any], name: str = "") -> HostConfig:
    where = f"host {name}: " if name else ""
    connection = str(hvars.get("ansible_connection") or "ssh")
    if connection not in SSH_CONNECTIONS:
        raise ConfigError(
            f"{where}ansible_connection={connection} is not supported for inventory hosts (pitstop "
            "reaches inventory hosts over SSH); define the host in the config instead (transport: local "
            "with a root directory for this machine)"
        )
    become = hvars.get("pitstop_sudo", hvars.get("ansible_become"))
    common = " ".join(str(hvars.get(k) or "") for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
    return HostConfig(
        transport="ssh",
        address=str(hvars.get("ansible_host") or hvars.get("ansible_ssh_host") or "") or None,
        port=int(hvars.get("ansible_port") or hvars.get("ansible_ssh_port") or 0) or None,
        user=str(hvars.get("pitstop_user") or hvars.get("ansible_user") or hvars.get("ansible_ssh_user") or "") or None,
        root=str(hvars["pitstop_root"]) if hvars.get("pitstop_root") else None,
        identity_file=hvars.get("ansible_ssh_private_key_file"),
        sudo=_ansible_bool(f"{where}pitstop_sudo/ansible_become", become) if become is not None else None,
        jump_host=_jump_from_common_args(common) if common.strip() else None,
        vars={
            k: v
            for k, v in hvars.items()
            if k not in CONNECTION_VARS and isinstance(v, str | int | float | bool)
        },
    )


def merge_host(configured: HostConfig | None, inventory: HostConfig, origin: str) -> HostConfig:
    """A host in both the config and the inventory: merged field by field, the config winning per field it
    sets (adding `root:` in the config once replaced the whole inventory entry: address and port were lost)."""
    given = inventory.model_dump(exclude_unset=True, exclude_none=True)
    sources = {f: origin for f in given}
    if configured is None:
        merged = inventory
    else:
        own = {f: getattr(configured, f) for f in configured.model_fields_set}
        if "vars" in own:
            own["vars"] = {**inventory.vars, **configured.vars}
        merged = HostConfig.model_validate({**given, **own})
        sources.update({f: "config" for f in configured.model_fields_set})
    merged._sources = sources
    return merged


def apply_inventory(cfg: EnvironmentConfig, base_dir: Path, doc: YamlDoc | None = None) -> None:
    """Merge ``cfg.inventory`` into ``cfg.hosts``/``cfg.groups`` (config entries win)."""
    assert cfg.inventory
    path = Path(cfg.inventory).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        inv = load_inventory(path)
        for name in inv.hostvars:
            from_inv = host_from_vars(inv.vars_of(name), f"{name} ({path})")
            cfg.hosts[name] = merge_host(cfg.hosts.get(name), from_inv, f"inventory {path}")
        for group in list(inv.groups) + list(inv.children):
            if group not in SKIP_GROUPS and group not in cfg.groups and group not in cfg.hosts:
                cfg.groups[group] = inv.members(group)
    except ConfigError as exc:
        if doc is None:
            raise
        raise ConfigError([doc.problem(["inventory"], str(exc))]) from None
    except ValueError as exc:  # a host entry pydantic refuses (bad port ...)
        where = [doc.problem(["inventory"], f"{path}: {exc}")] if doc else f"{path}: {exc}"
        raise ConfigError(where) from None
