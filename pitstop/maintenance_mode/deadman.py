"""The dead-man's switch: when maintenance goes on, each host gets an expiry of its own.

A detached watcher is started *through the connection* (so it lives on the host, not in pitstop):

* ``setsid``: ``setsid -f sh -c SCRIPT pitstop-deadman TTL RUN_ID TOKEN MARKER [OFF_ARGV...]`` — a
  new session that survives pitstop (and the SSH session) dying; it prints its pid, sleeps TTL
  seconds, then, only if MARKER still holds TOKEN, runs OFF_ARGV and removes MARKER.
* ``systemd``: ``systemd-run --on-active=TTL`` with the same check-then-lift body (a transient
  timer unit, visible in ``systemctl list-timers``), used by ``auto`` when the host runs systemd.

The check names what the watcher was armed for (``token``): the run id, or the record's
``"expires_at":...`` when the run renews its watchers (a long window: the run re-arms every TTL/2
and rewrites the marker with the new expiry, so a watcher armed for an earlier expiry finds its
token gone and exits without lifting anything).

Every value reaches the script as a positional parameter (``"$1"`` ...), never inside the script
text, and the transport quotes the argv: run ids, paths and commands are never evaluated.
A normal ``maintenance.off`` cancels the watcher (kills its process group / stops the timer).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Literal

from pydantic import BaseModel

from ..connectors.base import Connection
from ..errors import ConnectorError
from .base import DeadmanTarget

TAG = "pitstop-deadman"
# $1 run id (names the watcher in ps), $2 token, $3 marker, then the off argv. Lift only if the marker
# still holds the token (the expiry the watcher was armed for, or the run id).
_LIFT = ('grep -qF -- "$2" "$3" 2>/dev/null || exit 0; m=$3; shift 3; '
         'if [ $# -gt 0 ]; then "$@" || exit 1; fi; rm -f -- "$m"')
# $1 TTL seconds; prints the watcher's pid (= its process group) before detaching from the pipes.
_SETSID = 'echo "$$"; exec </dev/null >/dev/null 2>&1; sleep "$1" || exit 0; shift; ' + _LIFT


class DeadmanHandle(BaseModel):
    method: Literal["setsid", "systemd"]
    ref: str  # pid (setsid) or unit name (systemd)
    marker: str
    ttl_seconds: int
    token: str = ""  # what the marker must still hold for the watcher to lift (empty: the run id)

    def describe(self) -> str:
        return f"{self.method}:{self.ref} lifts after {self.ttl_seconds}s"


def _uses_systemd(conn: Connection, method: str) -> bool:
    if method != "auto":
        return method == "systemd"
    if conn.path("/") != "/":  # a sandbox stands for a host: never arm this machine's systemd
        return False
    return conn.run(["test", "-d", "/run/systemd/system"], check=False).exit_code == 0 and \
        conn.run(["systemd-run", "--version"], check=False).exit_code == 0


def argv_for(method: str, ttl_s: int, run_id: str, marker: str, off_argv: list[str],
             unit: str = "", token: str | None = None) -> list[str]:
    """The watcher's argument list (exposed for tests and the plan)."""
    check = token or run_id
    if method == "systemd":
        return ["systemd-run", "--quiet", "--collect", f"--unit={unit}", f"--on-active={ttl_s}s",
                "--timer-property=AccuracySec=1s", "--", "/bin/sh", "-c", _LIFT, TAG, run_id, check, marker,
                *off_argv]
    return ["setsid", "-f", "/bin/sh", "-c", _SETSID, TAG, str(ttl_s), run_id, check, marker, *off_argv]


def arm(conn: Connection, target: DeadmanTarget, *, ttl_s: float, run_id: str, method: str = "auto",
        sudo: bool = False, token: str | None = None) -> DeadmanHandle:
    """Start the watcher on the host behind ``conn``. Raises ConnectorError if it cannot be armed.
    ``token``: what the marker must still hold for it to lift (default: the run id). A systemd timer
    of the same run and marker is replaced; a setsid watcher is one more (cancel the old one)."""
    ttl = max(1, math.ceil(ttl_s))
    marker = conn.path(target.marker)
    if _uses_systemd(conn, method):
        unit = f"{TAG}-" + hashlib.sha256(f"{run_id}\0{marker}".encode()).hexdigest()[:12]
        conn.run(["systemctl", "stop", f"{unit}.timer"], check=False, sudo=sudo)  # re-arm: replace
        res = conn.run(argv_for("systemd", ttl, run_id, marker, target.off_argv, unit, token), check=False,
                       sudo=sudo)
        if res.exit_code != 0:
            raise ConnectorError(f"{conn.name}: could not arm the dead-man timer (systemd-run exited {res.exit_code})")
        return DeadmanHandle(method="systemd", ref=unit, marker=marker, ttl_seconds=ttl, token=token or "")
    res = conn.run(argv_for("setsid", ttl, run_id, marker, target.off_argv, token=token), check=False, sudo=sudo)
    pid = res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""
    if res.exit_code != 0 or not re.fullmatch(r"[0-9]{1,10}", pid):
        raise ConnectorError(f"{conn.name}: could not arm the dead-man watcher (setsid exited {res.exit_code})")
    return DeadmanHandle(method="setsid", ref=pid, marker=marker, ttl_seconds=ttl, token=token or "")


def cancel(conn: Connection, handle: DeadmanHandle, run_id: str, sudo: bool = False) -> bool:
    """Stop the watcher; True if one was running. A watcher that is already gone is fine."""
    if handle.method == "systemd":
        res = conn.run(["systemctl", "stop", f"{handle.ref}.timer"], check=False, sudo=sudo)
        return res.exit_code == 0
    if not re.fullmatch(r"[0-9]{1,10}", handle.ref):
        return False
    cmdline = conn.run(["cat", f"/proc/{handle.ref}/cmdline"], check=False)
    args = cmdline.stdout.split("\0")
    if cmdline.exit_code != 0 or TAG not in args or run_id not in args or (handle.token and handle.token not in args):
        return False  # gone already, or the pid now belongs to something else: leave it alone
    # the shell's own kill (no procps needed); "-PID" is the watcher's process group
    return conn.run(["sh", "-c", 'kill -TERM "-$1"', TAG, handle.ref], check=False, sudo=sudo).exit_code == 0
