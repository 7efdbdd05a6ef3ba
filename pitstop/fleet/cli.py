"""``pitstop hosts``: list the fleet, pin host keys explicitly, check connectivity."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from ..console import safe_console
from ..errors import InputError

hosts_app = typer.Typer(no_args_is_help=True, help="The fleet: inventory, host keys, connectivity.")
out = safe_console()
err = safe_console(stderr=True)

EnvOpt = Annotated[str, typer.Option("--env", "-e", help="environment name (config/<env>.yaml) or a path")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]
GroupArg = Annotated[str, typer.Argument(help="host group, host name or `all`")]
GroupOpt = Annotated[str | None, typer.Option("--group", "-g", help="the same as GROUP (as in `hosts list`)")]


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def select_hosts(env: str, group: str | None, default: Callable[[Any], str] = lambda cfg: "all"
                 ) -> tuple[Any, list[str]]:
    """The environment's config and the hosts of ``group`` (``default(cfg)`` when unset); an unknown
    group is an input error (exit 2)."""
    from ..config import load_config

    cfg = load_config(env)
    try:
        return cfg, cfg.group_hosts(group or default(cfg))
    except ValueError as exc:
        raise InputError(str(exc)) from None




def _target(cfg: Any, name: str) -> Any:
    from .inventory import resolve_target

    return resolve_target(name, cfg.hosts[name], cfg.ssh, cfg.hosts)


@hosts_app.command("list")
def hosts_list(
    env: EnvOpt, group: Annotated[str, typer.Option("--group", "-g")] = "all", as_json: JsonOpt = False
) -> None:
    """Hosts with their resolved address (inventory and ~/.ssh/config applied) and pinned key."""
    from .hostkeys import entry_name, fingerprint, known_hosts

    cfg, names = select_hosts(env, group)
    keys = known_hosts(cfg.ssh.known_hosts)
    rows = []
    for name in names:
        host = cfg.hosts[name]
        row: dict[str, Any] = {
            "name": name,
            "transport": host.transport,
            "groups": [g for g, m in cfg.groups.items() if name in m],
            "sources": host.sources,  # which file set each field: config wins per field over the inventory
        }
        if host.transport == "ssh":
            t = _target(cfg, name)
            pinned: dict[str, Any] = dict(keys.lookup(entry_name(t.hostname, t.port)) or {})
            row.update(
                address=t.hostname,
                port=t.port,
                user=t.user,
                sudo=t.sudo,
                jump=t.jump.describe() if t.jump else None,
                host_key=[f"{k} {fingerprint(v)}" for k, v in pinned.items()] or None,
            )
        else:
            row.update(root=str(cfg.resolve(host.root)))
        rows.append(row)
    if as_json:
        _emit(rows)
        return
    t = Table(title=f"hosts of {cfg.name} ({group})")
    for col in ("name", "transport", "target", "groups", "host key"):
        t.add_column(col, overflow="fold")
    for r in rows:
        target = (
            f"{r['user']}@{r['address']}:{r['port']}" + (f" via {r['jump']}" if r["jump"] else "")
            if r["transport"] == "ssh"
            else r["root"]
        )
        key = "\n".join(r.get("host_key") or []) or (
            "[yellow]not pinned[/yellow]" if r["transport"] == "ssh" else ""
        )
        t.add_row(r["name"], r["transport"], target, ", ".join(r["groups"]), key)
    out.print(t)


def _prefer(pinned_types: list[str]) -> list[str] | None:
    """paramiko's host-key algorithms with the pinned key types first, so the server shows the key
    we can compare (a host with ed25519 pinned is asked for ed25519 before ecdsa)."""
    import paramiko

    if not pinned_types:
        return None
    default = list(getattr(paramiko.Transport, "_preferred_keys"))  # noqa: B009 - paramiko's default order

    def family(alg: str) -> str:
        return "ssh-rsa" if alg.startswith("rsa-sha2-") or alg == "ssh-rsa" else alg

    return [a for a in default if family(a) in pinned_types] + [a for a in default if family(a) not in pinned_types]


def _fetch(cfg: Any, name: str, pinned_types: list[str] | None = None) -> Any:
    from ..connectors.ssh import SshConnection
    from .hostkeys import fetch_host_key

    t = _target(cfg, name)
    sock = None
    jump = None
    if t.jump is not None:
        jump = SshConnection.for_target(t.jump, cfg.ssh)
        sock = jump._transport().open_channel(
            "direct-tcpip", (t.hostname, t.port), ("127.0.0.1", 0), timeout=cfg.ssh.connect_timeout
        )
    try:
        return fetch_host_key(t.hostname, t.port, cfg.ssh.connect_timeout, sock=sock,
                              key_types=_prefer(pinned_types or []))
    finally:
        if jump is not None:
            jump.close()


@hosts_app.command("trust")
def hosts_trust(
    group: GroupArg,
    env: EnvOpt,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="pin without asking")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fetch the host keys of GROUP, show their SHA256 fingerprints and pin the new ones.

    Keys go into the first configured known_hosts file. A key that differs from a pinned one is
    never replaced: remove the old entry yourself (ssh-keygen -R) after finding out why it changed.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .hostkeys import known_hosts, pin

    cfg, names = select_hosts(env, group)
    names = [n for n in names if cfg.hosts[n].transport == "ssh"]
    if not names:
        raise InputError(f"no SSH hosts in {group!r}: nothing to trust")
    keys = known_hosts(cfg.ssh.known_hosts)
    rows: list[dict[str, Any]] = []

    def one(name: str) -> dict[str, Any]:
        from .hostkeys import entry_name

        t = _target(cfg, name)
        pinned: dict[str, Any] = dict(keys.lookup(entry_name(t.hostname, t.port)) or {})
        try:
            f = _fetch(cfg, name, list(pinned))
        except Exception as exc:  # noqa: BLE001 - reported per host
            return {"host": name, "status": "unreachable", "error": str(exc)}
        old = pinned.get(f.key.get_name())
        if old is not None:
            status = "already pinned" if old == f.key else "CHANGED"
        else:  # asked for the pinned type first and shown another: the pinned key is gone
            status = "CHANGED" if pinned else "pinned"
        return {
            "host": name,
            "entry": f.name,
            "type": f.key.get_name(),
            "fingerprint": f.fingerprint,
            "status": status,
            "_fetched": f,
        }

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(names)))) as pool:
        rows = list(pool.map(one, names))
    new = [r for r in rows if r["status"] == "pinned"]
    changed = [r for r in rows if r["status"] == "CHANGED"]
    if not as_json:
        _print_trust(rows)
    ask = bool(new) and not changed and not yes and not as_json
    do_pin = (
        bool(new)
        and not changed
        and (yes or (ask and typer.confirm(f"pin {len(new)} new host key(s) into {cfg.ssh.known_hosts[0]}?")))
    )
    if do_pin:
        pin(cfg.ssh.known_hosts[0], [r["_fetched"] for r in new])
    else:
        for r in new:
            r["status"] = "not pinned"
    if as_json:
        _emit([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    elif do_pin:
        out.print(f"[green]✓[/green] pinned {len(new)} key(s) in {cfg.ssh.known_hosts[0]}")
    if changed:
        err.print(
            f"[bold red]refusing:[/bold red] {len(changed)} host key(s) differ from the pinned ones "
            f"({', '.join(r['host'] for r in changed)}); nothing was written. If the change is expected, "
            "remove the old entry with ssh-keygen -R '<entry>' -f <known_hosts> and run trust again."
        )
    if unreachable := [(r["host"], r["error"]) for r in rows if r["status"] == "unreachable"]:
        from rich.markup import escape

        from ..cli_errors import hosts_failed

        err.print(f"[bold red]error:[/bold red] {escape(hosts_failed(unreachable, 'reached'))}", soft_wrap=True)
    if changed or unreachable:
        raise typer.Exit(1)


def _print_trust(rows: list[dict[str, Any]]) -> None:
    t = Table(title="host keys")
    for col in ("host", "entry", "key", "fingerprint", "status"):
        t.add_column(col, overflow="fold")
    style = {"pinned": "green", "already pinned": "dim", "CHANGED": "bold red", "unreachable": "red"}
    for r in rows:
        st = r["status"]
        t.add_row(
            r["host"],
            r.get("entry", ""),
            r.get("type", ""),
            r.get("fingerprint", r.get("error", "")),
            f"[{style.get(st, '')}]{st}[/]",
        )
    out.print(t)


@hosts_app.command("check")
def hosts_check(
    env: EnvOpt,
    group: Annotated[str, typer.Argument(help="host group (default all)")] = "all",
    group_opt: GroupOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Connect to every host (host keys verified) and run `true`; exit 1 if any host fails."""
    from ..connectors import connect_host
    from ..model import HostResult, Status
    from .fanout import fan_out

    group = group_opt or group

    cfg, names = select_hosts(env, group)

    def one(name: str) -> HostResult:
        import time

        t0 = time.monotonic()
        try:
            with connect_host(cfg, name) as conn:
                conn.run(["true"], timeout=cfg.ssh.connect_timeout * 2)
            return HostResult(host=name, status=Status.SUCCEEDED, duration_s=round(time.monotonic() - t0, 3))
        except Exception as exc:  # noqa: BLE001 - reported per host
            return HostResult(
                host=name, status=Status.FAILED, error=str(exc), duration_s=round(time.monotonic() - t0, 3)
            )

    res = fan_out(names, one, cfg.fleet, enforce=False)
    if as_json:
        _emit([r.model_dump(mode="json") for r in res.results])
    else:
        t = Table(title=f"connectivity of {cfg.name} ({group})")
        for col in ("host", "status", "seconds", "error"):
            t.add_column(col, overflow="fold")
        for r in res.results:
            ok = r.status == Status.SUCCEEDED
            t.add_row(
                r.host,
                "[green]ok[/green]" if ok else "[red]failed[/red]",
                f"{r.duration_s:.2f}",
                r.error or "",
            )
        out.print(t)
    if res.failed:
        from rich.markup import escape

        from ..cli_errors import hosts_failed

        failed = [(r.host, r.error or "failed") for r in res.results if r.status != Status.SUCCEEDED]
        if failed:
            err.print(f"[bold red]error:[/bold red] {escape(hosts_failed(failed, 'reached'))}", soft_wrap=True)
        raise typer.Exit(1)
