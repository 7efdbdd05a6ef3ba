"""Audiences (ops, oncall, customers ...) and how an event reaches them.

A channel names the audiences it serves; an audience says which events it wants (fnmatch patterns)
and in which timezone it reads times. For one event, each channel delivers *once*, rendered for the
first of its audiences that wants the event (a channel is one destination, so it never gets two
copies). Emergency events also reach every audience marked ``emergency: true``.

Templates are Jinja2, looked up most specific first::

    {event}.{audience}.{style}  {event}.{style}  {family}.{audience}.{style}  {family}.{style}  default.{style}

where ``style`` is ``short`` (chat) or ``full`` (email, file), and ``family`` is the part of the event
before the first dot. An audience that is not *internal* (only ``ops`` is, unless ``internal: true``)
gets a plain-language message: its templates see only public facts (what is affected, when, the
expected downtime, the outcome in words) — never step or stage names, error text, hosts, the
operator's reason or run ids — and are looked up with ``public`` tried before each generic name::

    {event}.{audience}.{style}  {event}.public.{style}  {event}.{style}  {family}.{audience}.{style}
    {family}.public.{style}  {family}.{style}  public.{style}
 Config ``notifications.templates`` (inline sources keyed by those names) and
``notifications.template_dir`` override the built-in templates in ``pitstop/notify/templates``.
The first line a template renders is the subject; the rest is the body.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from ..config import AudienceConfig, EnvironmentConfig
from .channels import Channel

EMERGENCY_FAMILY = "emergency"


@dataclass(frozen=True)
class Audience:
    name: str
    cfg: AudienceConfig
    timezone: str

    @property
    def internal(self) -> bool:
        """Whether messages may carry internal detail: step names, error text, hosts."""
        return self.cfg.internal if self.cfg.internal is not None else self.name == "ops"

    def wants(self, event: str) -> bool:
        if self.cfg.emergency and event.split(".", 1)[0] == EMERGENCY_FAMILY:
            return True
        return any(fnmatch.fnmatchcase(event, p) for p in self.cfg.events)


def audiences(cfg: EnvironmentConfig) -> dict[str, Audience]:
    defined = dict(cfg.notifications.audiences)
    defined.setdefault("ops", AudienceConfig.model_validate({}))
    return {n: Audience(n, a, a.timezone or cfg.timezone) for n, a in defined.items()}


def routes(cfg: EnvironmentConfig, channels: list[Channel], event: str) -> list[tuple[Channel, Audience]]:
    """(channel, audience) pairs that get ``event``: at most one per channel."""
    known = audiences(cfg)
    out = []
    for ch in channels:
        for name in ch.cfg.audiences:
            aud = known.get(name)
            if aud and aud.wants(event):
                out.append((ch, aud))
                break
    return out


# -- rendering ----------------------------------------------------------------------------------------
def fmt_local(value: datetime | str | None, tz: str, fmt: str = "%a %d %b %Y %H:%M %Z") -> str:
    if value is None or value == "":
        return ""
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt.astimezone(ZoneInfo(tz)).strftime(fmt)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = max(1, int(-(-seconds // 60)))  # round up: never promise less than history says
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes % 60 else f"{minutes // 60} h"


@lru_cache(maxsize=32)
def _environment(overrides: tuple[tuple[str, str], ...], template_dir: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = [jinja2.DictLoader({k if k.endswith(".j2") else f"{k}.j2": v
                                                           for k, v in overrides})]
    if template_dir:
        loaders.append(jinja2.FileSystemLoader(template_dir))
    loaders.append(jinja2.PackageLoader("pitstop.notify", "templates"))
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=False,  # noqa: S701 - plain text
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=False)
    env.filters["duration"] = fmt_duration
    return env


def template_names(event: str, audience: str, style: str, internal: bool = True) -> list[str]:
    family = event.split(".", 1)[0]
    if internal:
        names = [f"{event}.{audience}.{style}", f"{event}.{style}", f"{family}.{audience}.{style}",
                 f"{family}.{style}", f"default.{style}"]
    else:
        names = [f"{event}.{audience}.{style}", f"{event}.public.{style}", f"{event}.{style}",
                 f"{family}.{audience}.{style}", f"{family}.public.{style}", f"{family}.{style}", f"public.{style}"]
    return [f"{n}.j2" for n in names]


# what a customer-facing audience reads when no template of its own covers an event (no internal wording)
PLAIN_SUBJECTS = {"run.started": "Maintenance has started", "run.completed": "Maintenance is complete",
                  "run.failed": "Maintenance ended with problems", "stage.completed": "Maintenance in progress",
                  "stage.failed": "Maintenance: a problem is being handled", "run.resumed": "Maintenance resumed",
                  "verification.failed": "Maintenance ended with problems",
                  "window.extended": "Maintenance is taking longer than announced",
                  "maintenance.stuck": "Maintenance: a problem is being handled",
                "run.cancelled": "Maintenance called off"}


# What a non-internal audience's template may see: public facts only (an allow-list, so a new internal
# field never reaches customers by default). ``run`` keeps its runbook and trigger, nothing else.
PUBLIC_KEYS = frozenset({"env", "now", "affects", "user_actions", "contact", "impact", "window", "downtime",
                         "started_at", "status", "severity", "notice", "next_window", "elapsed_s"})
STATUS_WORDS = {"succeeded": "completed: everything is available again",
                "failed": "ended with problems: our team is working on it and will keep you posted",
                "failed_verification": "ended with problems: our team is working on it and will keep you posted",
                "cancelled": "stopped before it was complete: our team is working on it",
                "skipped": "did not take place",
                "not-approved": "was called off before anything changed: everything stays available"}


def public_context(event: str, context: dict[str, Any], title: str) -> dict[str, Any]:
    """The context a non-internal audience's template sees: public facts, a plain subject, the outcome in words."""
    out = {k: v for k, v in context.items() if k in PUBLIC_KEYS}
    out["subject"] = f"{PLAIN_SUBJECTS.get(event, 'Maintenance update')} — {title}"
    run = context.get("run")
    if isinstance(run, dict):
        out["run"] = {"runbook": run.get("runbook"), "trigger": run.get("trigger")}
    if "run" not in context and context.get("reason"):
        out["reason"] = context["reason"]  # a notice's: pitstop's own words ("The schedule changed."), no operator's
    status = context.get("status")
    out["status_text"] = STATUS_WORDS.get(str(status), "in progress") if status else ""
    return out


def render(cfg: EnvironmentConfig, event: str, audience: Audience, style: str,
           context: dict[str, Any]) -> tuple[str, str]:
    """Render ``event`` for ``audience`` in ``style``; returns (subject, body)."""
    tdir = cfg.notifications.template_dir
    env = _environment(tuple(sorted(cfg.notifications.templates.items())),
                       str(cfg.resolve(tdir)) if tdir else None)
    tmpl = env.select_template(template_names(event, audience.name, style, audience.internal))
    tz = audience.timezone
    if not audience.internal:  # customers: what is affected and the outcome, never steps, errors or hosts
        context = public_context(event, context, (context.get("env") or {}).get("title") or cfg.name)
    text = tmpl.render(**context, event=event, audience=audience.name, style=style, tz=tz,
                       local=lambda v, fmt="%a %d %b %Y %H:%M %Z": fmt_local(v, tz, fmt))
    lines = text.strip().splitlines() or [event]
    subject = lines[0].strip()
    body = "\n".join(lines[1:]).strip() or subject  # services refuse an empty body (apprise: "No message body")
    return subject, body
