"""Writes ``report.json``, ``report.md`` and ``report.html`` into the run folder, seals every file of
the folder in ``manifest.json`` (SHA-256 each, bound to the audit chain's last hash), copies the folder
to storage and, inside a Prefect flow run, publishes the report as Prefect artifacts."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import ChainableUndefined, Environment, PackageLoader, Undefined, select_autoescape
from markupsafe import Markup

from ..audit import read_events
from ..fsmodes import write_private
from ..runbook import STAGE_ORDER
from ..units import human_seconds
from . import fallback
from .shape import error_text

if TYPE_CHECKING:
    from ..context import RunContext

REPORT_FILES = ("report.json", "report.md", "report.html")
MANIFEST = "manifest.json"


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else None


def _dur(s: Any) -> str:
    """Seconds as a human duration; anything that is not a number is shown as it is (never raises)."""
    if s is None or isinstance(s, Undefined):
        return "—"
    try:
        return human_seconds(float(s))
    except (TypeError, ValueError, OverflowError):
        return str(s)


def _kib(n: Any) -> str:
    try:
        return f"{n / 1024:,.1f} KiB" if _is_num(n) else "—"
    except OverflowError:  # an int too large for a float: shown as it is
        return f"{n} B"


def _num(v: Any) -> str:
    if v is None or isinstance(v, Undefined):
        return "—"
    return f"{v:,}" if _is_num(v) else str(v)


def _receipt(v: Any, md: bool = False) -> str:
    """A delivery's receipt in one line: Message-ID and SMTP reply, HTTP statuses, or the file's hash (in
    Markdown the Message-ID is code: its ``<…>`` would read as an HTML tag and vanish)."""
    if not isinstance(v, dict):
        return ""
    st = v.get("http_status")
    mid = f"`{v['message_id']}`" if md and v.get("message_id") else v.get("message_id")
    parts = [f"Message-ID {mid}" if mid else "",
             f"server: {v['server_reply']}" if v.get("server_reply") else "",
             f"HTTP {', '.join(map(str, st))}" if isinstance(st, list) and st else "",
             f"{v['path']} sha256 {v.get('sha256')}" if v.get("path") else ""]
    return "; ".join(str(p) for p in parts if p)


@functools.cache
def _env() -> Environment:
    """One environment per process: templates are compiled once, not on every report. A value missing
    anywhere (``r.backup.verification.rows`` of a failed verification) reads as empty, never raises."""
    env = Environment(loader=PackageLoader("pitstop", "report/templates"), undefined=ChainableUndefined,
                      autoescape=select_autoescape(["html", "html.j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["dur"] = _dur
    env.filters["kib"] = _kib
    env.filters["total"] = lambda xs: sum(xs) if xs and all(_is_num(x) for x in xs) else None
    env.filters["ts"] = lambda t: "—" if not t else str(t).replace("T", " ")[:19] + " UTC"
    env.filters["hms"] = lambda t: "—" if not t else str(t)[11:19]
    env.filters["pct"] = lambda v: "—" if v is None or isinstance(v, Undefined) else f"{v}%"
    env.filters["num"] = _num
    env.filters["receipt"] = _receipt
    env.filters["short"] = lambda v, n=80: (str(v)[: n - 1] + "…") if v is not None and len(str(v)) > n else (
        "" if v is None or isinstance(v, Undefined) else str(v))
    env.filters["timeline_style"] = lambda s, r: _bar(_get(s, "started_at"), _get(s, "finished_at"), r)
    env.filters["window_style"] = lambda w, r: _bar(_get(w, "started_at"), _get(w, "ended_at"), r)
    env.filters["planned_style"] = _planned_bar
    env.filters["js"] = lambda v: v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
    env.filters["md_cell"] = lambda v: "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")
    return env


def _t(x: Any) -> float | None:
    if not x or not isinstance(x, str):
        return None
    try:
        return datetime.fromisoformat(x).timestamp()
    except ValueError:
        return None


def _span(r: dict[str, Any]) -> tuple[float | None, float | None]:
    """The timeline's extent: the run itself, to its last event when it never finished (a planned window
    longer than the run is clipped)."""
    return _t(_get(r, "started_at")), _t(_get(r, "finished_at")) or _t(_get(r, "last_event_at"))


def _style(s0: float | None, s1: float | None, r: dict[str, Any]) -> str:
    r0, r1 = _span(r)
    if r0 is None or r1 is None or s0 is None or r1 <= r0:
        return "left:0;width:100%"
    s1 = s1 if s1 is not None else r1
    left = min(99.4, max(0.0, (s0 - r0) / (r1 - r0) * 100))
    width = max(0.4, (s1 - s0) / (r1 - r0) * 100)
    return f"left:{left:.2f}%;width:{min(width, 100 - left):.2f}%"


def _bar(start: str | None, end: str | None, r: dict[str, Any]) -> str:
    """CSS left/width (percent of the run) for a timeline bar."""
    return _style(_t(start), _t(end), r)


def _planned_bar(w: dict[str, Any], r: dict[str, Any]) -> str:
    """The planned window: from its planned start (or the actual opening) for the announced downtime."""
    start = _t(_get(w, "planned_start")) or _t(_get(w, "started_at"))
    announced = _get(w, "downtime_announced_s")
    if start is None or not _is_num(announced) or not announced:
        return "display:none"
    end = _t(_get(w, "planned_end")) or start + float(announced)
    return _style(start, end, r)


def _jsonable(v: Any, depth: int = 0) -> Any:
    """``v`` as strict JSON can hold it: non-finite floats and unknown objects as text, keys as strings."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if depth > 200:  # deeper than any report: cut rather than overflow the stack
        return "…"
    if isinstance(v, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x, depth + 1) for x in v]
    if v is None or isinstance(v, str | int | float | bool):
        return v
    return str(v)


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(_jsonable(report), indent=2, sort_keys=False, allow_nan=False) + "\n"


def _guarded(name: str, block: Callable[[Any], Iterator[str]], failed: list[tuple[str, BaseException]],
             note: Callable[[str, BaseException], str]) -> Callable[[Any], Iterator[str]]:
    """A template block that renders whole or, when it raises, as a short note saying so."""
    def run(context: Any) -> Iterator[str]:
        try:
            parts = list(block(context))
        except Exception as exc:  # noqa: BLE001 - this section only; the rest of the report renders
            failed.append((name, exc))
            yield note(name, exc)
            return
        yield from parts
    return run


def _md_note(name: str, exc: BaseException) -> str:
    section = name.replace("_", " ")
    return f"\n> **The {section} section could not be rendered** ({error_text(exc)}).\n\n".replace("|", "/")


def _html_note(name: str, exc: BaseException) -> str:
    section = name.replace("_", " ")
    return str(Markup('<section class="unrendered"><p><b>The {} section could not be rendered</b> ({}).</p>'
                      "</section>\n").format(section, error_text(exc)))


def render_template(template: str, report: dict[str, Any]) -> tuple[str, list[str]]:
    """Render ``template`` section by section (its ``{% block %}``s): a section that fails on odd data is
    replaced by a note naming it and the error, and the list of problems at the top names it too.
    Returns the text and those problems. Only a fault outside every section raises (the caller then
    falls back to the minimal rendering)."""
    tmpl = _env().get_template(template)
    note = _html_note if template.endswith(".html.j2") else _md_note
    problems = [str(p) for p in report.get("render_errors") or []] if isinstance(report, dict) else []

    def once(listed: list[str]) -> tuple[str, list[tuple[str, BaseException]]]:
        failed: list[tuple[str, BaseException]] = []
        context = tmpl.new_context({"r": report, "problems": listed})
        for name, funcs in context.blocks.items():
            context.blocks[name] = [_guarded(name, f, failed, note) for f in funcs]
        return str(tmpl.environment.concat(tmpl.root_render_func(context))), failed  # type: ignore[attr-defined]

    text, failed = once(problems)
    mine = [f"the {n.replace('_', ' ')} section could not be rendered ({error_text(e)})" for n, e in failed]
    if mine:  # once more, with the failed sections named at the top
        text, _ = once(problems + mine)
    return text, mine


def render(report: dict[str, Any]) -> dict[str, str]:
    """The three renderings. A section that fails on odd data is replaced by a note (report.json's
    ``render_errors`` names it too); a renderer that still fails gives way to a minimal rendering of the
    same format that says what could not be rendered: a run never ends without its report files."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for name, template in (("report.md", "report.md.j2"), ("report.html", "report.html.j2")):
        try:
            out[name], failed = render_template(template, report)
            problems += [f"{name}: {p}" for p in failed]
        except Exception as exc:  # noqa: BLE001 - any rendering fault: fall back, never lose the report
            out[name] = fallback.render(name, report, exc)
            problems.append(f"{name}: rendered minimal ({error_text(exc)})")
    try:
        listed = report["render_errors"] if isinstance(report.get("render_errors"), list) else []
        out["report.json"] = render_json({**report, "render_errors": listed + problems} if problems else report)
    except Exception as exc:  # noqa: BLE001
        out["report.json"] = fallback.render("report.json", report, exc)
    return {name: out[name] for name in REPORT_FILES}


def manifest_text(manifest: dict[str, Any]) -> str:
    """The one canonical serialisation of a manifest: verify re-serialises and compares bytes."""
    return json.dumps(manifest, indent=2) + "\n"


def seal(run_dir: Path) -> Path:
    """Write ``manifest.json``: SHA-256 of every file, plus the audit chain's length and last hash."""
    files = {p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest: dict[str, Any] = {"algorithm": "sha256", "files": files}
    audit = run_dir / "audit.jsonl"
    if audit.is_file():
        try:
            events = read_events(audit)
        except ValueError:  # a damaged line: seal what is readable; `report verify` names the damage
            events = fallback.readable_events(audit)
        last = events[-1].get("hash") if events else None
        if isinstance(last, str) and len(last) == 64:
            manifest["audit"] = {"events": len(events), "last_hash": last}
    path = run_dir / MANIFEST
    write_private(path, manifest_text(manifest))
    return path


def copy_to_storage(ctx: RunContext) -> list[dict[str, Any]]:
    """Copy the sealed run folder to ``reports/<env>/<run_id>/`` in storage. On an S3 bucket with
    Object Lock the objects get COMPLIANCE retention, and a receipt with every object's ETag and
    VersionId is written next to the folder (``<run_id>.receipt.json``, locally and in storage)."""
    from .objectlock import lock_policy, put_locked

    policy = lock_policy(ctx.storage)
    copied = []
    for p in sorted(ctx.run_dir.rglob("*")):
        if p.is_file():
            key = f"reports/{ctx.cfg.name}/{ctx.run_id}/{p.relative_to(ctx.run_dir).as_posix()}"
            if policy:
                copied.append(put_locked(ctx.storage, key, p.read_bytes(), policy))
            else:
                stored = ctx.storage.put_bytes(key, p.read_bytes())
                copied.append({"key": key, "location": stored.location, "sha256": stored.sha256})
    from .anchor import publish as publish_anchor

    publish_anchor(ctx.storage, ctx.cfg.name, ctx.run_dir, policy)
    if policy:
        receipt = json.dumps({"run_id": ctx.run_id, "object_lock": policy, "objects": copied}, indent=2) + "\n"
        write_private(ctx.run_dir.with_name(f"{ctx.run_id}.receipt.json"), receipt)
        ctx.storage.put_bytes(f"reports/{ctx.cfg.name}/{ctx.run_id}.receipt.json", receipt.encode())
    return copied


def render_run_folder(run_dir: Path, redact: Callable[[str], str] = str) -> tuple[dict[str, Any], dict[str, str]]:
    """Build the report from the folder's audit log, write the three files and seal the folder.

    Never raises on what the audit log holds (pitstop.report.fallback): only a disk that refuses the
    writes stops it. Returns the report and the texts written."""
    events = fallback.readable_events(run_dir / "audit.jsonl")
    report = fallback.build(events, [s.value for s in STAGE_ORDER], run_dir.name)
    texts = {name: redact(text) for name, text in render(report).items()}
    try:
        for name, text in texts.items():
            write_private(run_dir / name, text)
        seal(run_dir)
    except OSError:  # a full disk: no half-written report stays, and its space goes back to the audit log
        for name in [*texts, MANIFEST]:
            (run_dir / name).unlink(missing_ok=True)
        raise
    return report, texts


def write_report(ctx: RunContext) -> dict[str, Any]:
    ctx.audit.close()  # what the report is built from is what gets sealed: nothing lands after it
    try:
        report, texts = render_run_folder(ctx.run_dir, ctx.redact)
    except BaseException:
        ctx.audit.reopen()
        raise
    out: dict[str, Any] = {"dir": str(ctx.run_dir), "status": report.get("status")}
    try:
        out["storage"] = copy_to_storage(ctx)
    except Exception as exc:  # noqa: BLE001 - the local copy is the record; storage copy is best effort
        out["storage_error"] = ctx.redact(str(exc))
    from .artifacts import full_report_link, publish

    try:
        out["artifacts"] = publish(report, texts["report.md"], full_report_link(ctx),
                                   ctx.flow_run.publish if ctx.flow_run is not None else None)
    except Exception as exc:  # noqa: BLE001 - the Prefect UI copy is a convenience, the run folder the record
        out["artifacts_error"] = ctx.redact(str(exc))
    return out
