"""``tuning.sysctl``: set kernel parameters, verify them, persist them in a drop-in file.

For each key: read the live value, set it with ``sysctl -w key=value`` if it differs, read it back
(verify), then merge the values into the drop-in (``/etc/sysctl.d/90-pitstop.conf``; other keys in
it are kept) so they survive a reboot. Reports old and new values. Idempotent.

On a sandbox host (``transport: local``) the live values belong to *this* machine, so they are
read but never set: ``apply`` defaults to true on real hosts and false on sandboxes (where the
drop-in lands under the sandbox root); ``apply: true`` on a sandbox fails instead of touching it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..connectors.base import Cmd, Connection
from ..context import RunContext
from ..errors import StepFailed
from ..model import StepOutcome
from ..registry import Placement, Target, has_work, planner, step
from ..work import HasWork
from . import safefile
from .hostutil import AbsPath, is_sandbox

SysctlKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_][a-z0-9_-]*([./][A-Za-z0-9_:@-]+)+$", max_length=200)]
SysctlValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 \t._:,/+-]{1,200}$")]
HEADER = "# Managed by pitstop (tuning.sysctl): values set, verified and persisted by maintenance runs.\n"


class SysctlParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: dict[SysctlKey, SysctlValue | int] = Field(min_length=1)
    file: AbsPath = "/etc/sysctl.d/90-pitstop.conf"
    apply: bool | None = Field(None, description="set live values (default: yes, except on sandbox hosts)")
    sudo: bool = False


def _norm(v: object) -> str:
    return " ".join(str(v).split())


def _proc(key: str) -> str:
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def read_live(conn: Connection, key: str) -> str | None:
    res = conn.run(["cat", "--", _proc(key)], check=False)
    return _norm(res.stdout) if res.exit_code == 0 else None


def parse_dropin(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")) and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip().lstrip("-")] = _norm(v)
    return out


def render_dropin(values: dict[str, str]) -> str:
    return HEADER + "".join(f"{k} = {v}\n" for k, v in sorted(values.items()))


class SysctlState(BaseModel):
    old: dict[str, str | None]
    file_before: str
    file_after: str
    apply: bool

    def live_changes(self, wanted: dict[str, str]) -> list[str]:
        return [k for k, v in wanted.items() if self.apply and self.old.get(k) != v]


def _state(conn: Connection, p: SysctlParams) -> SysctlState:
    apply = p.apply if p.apply is not None else not is_sandbox(conn)
    if apply and is_sandbox(conn):
        raise StepFailed(f"{conn.name} is a sandbox host: live kernel values are this machine's; "
                         "set `apply: false` (the drop-in is still written under the sandbox)")
    host_dir, _, name = p.file.rpartition("/")
    unsafe = safefile.check(conn, conn.path(host_dir or "/"), name, p.sudo)
    if unsafe:  # root would read and replace whatever another user links there
        raise StepFailed(f"{conn.name}: refusing to read or write {p.file}: {unsafe}")
    before = conn.get(p.file, sudo=p.sudo).decode(errors="replace") if conn.exists(p.file, sudo=p.sudo) else ""
    merged = {**parse_dropin(before), **{k: _norm(v) for k, v in p.values.items()}}
    return SysctlState(old={k: read_live(conn, k) for k in p.values}, file_before=before,
                       file_after=render_dropin(merged), apply=apply)


@step("tuning.sysctl", params=SysctlParams, placement=Placement.OUTSIDE, target=Target.HOSTS)
def tuning_sysctl(ctx: RunContext, params: SysctlParams, host: str) -> StepOutcome:
    """Set kernel parameters (sysctl), verify them and persist them in a drop-in file."""
    conn = ctx.host(host)
    st = _state(conn, params)
    wanted = {k: _norm(v) for k, v in params.values.items()}
    to_set = st.live_changes(wanted)
    # keys cannot start with "-" (SysctlKey); "--" ends sysctl's options all the same
    conn.run_batch([Cmd(["sysctl", "-q", "-w", "--", f"{key}={wanted[key]}"], sudo=params.sudo) for key in to_set])
    new = {k: read_live(conn, k) for k in wanted} if st.apply else {}
    wrong = [k for k in to_set if new.get(k) != wanted[k]]
    if wrong:
        raise StepFailed("; ".join(f"{k}: wanted {wanted[k]!r}, kernel reports {new.get(k)!r}" for k in wrong))
    file_changed = st.file_after != st.file_before
    if file_changed:
        conn.put(params.file, st.file_after.encode(), sudo=params.sudo)
        if parse_dropin(conn.get(params.file, sudo=params.sudo).decode()) != parse_dropin(st.file_after):
            raise StepFailed(f"{params.file} does not read back as written")
    report = {k: {"old": st.old[k], "new": wanted[k], "live": new.get(k, st.old[k]), "set": k in to_set}
              for k in wanted}
    ctx.event("tuning.sysctl", host=host, values=report, file=params.file, file_changed=file_changed,
              applied=st.apply)
    changes = [f"{k} {st.old[k]} -> {wanted[k]}" for k in to_set]
    summary = ", ".join(changes) or ("live values already set" if st.apply else "live values not applied (sandbox)")
    return StepOutcome(changed=bool(to_set or file_changed), data={"values": report, "file": params.file,
                       "file_changed": file_changed, "applied": st.apply},
                       summary=summary + (f"; {params.file} updated" if file_changed else ""))


@planner("tuning.sysctl")
def plan_sysctl(ctx: RunContext, params: SysctlParams, host: str) -> list[str]:
    conn = ctx.host(host)
    st = _state(conn, params)
    wanted = {k: _norm(v) for k, v in params.values.items()}
    lines = [f"set {k}: {st.old[k]} -> {wanted[k]}" for k in st.live_changes(wanted)]
    if not st.apply:
        lines.append("live values not applied (sandbox or apply: false)")
    lines.append(f"write {params.file}" if st.file_after != st.file_before else f"{params.file} already up to date")
    return lines


@has_work("tuning.sysctl")
def sysctl_work(ctx: RunContext, params: SysctlParams, host: str) -> HasWork:
    st = _state(ctx.host(host), params)
    keys = st.live_changes({k: _norm(v) for k, v in params.values.items()})
    if keys or st.file_after != st.file_before:
        return HasWork.yes(f"set {', '.join(keys)}" if keys else f"write {params.file}")
    return HasWork.no("kernel values and drop-in already as wanted")
