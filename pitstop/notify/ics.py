"""An iCalendar (RFC 5545) invite for a maintenance window, attached to email notices.

The UID is derived from the window id, so every notice of one window (7 d, 48 h, 24 h) updates the
same calendar entry, and a cancellation (``METHOD:CANCEL``, higher ``SEQUENCE``) removes it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar, Event

from ..schedule import Window


def window_uid(window: Window, environment: str) -> str:
    return f"{window.id}.{environment}@pitstop"


def invite(window: Window, environment: str, summary: str, description: str = "",
           cancelled: bool = False, now: datetime | None = None) -> bytes:
    cal = Calendar()
    cal.add("prodid", "-//pitstop//maintenance notices//EN")
    cal.add("version", "2.0")
    cal.add("method", "CANCEL" if cancelled else "PUBLISH")
    ev = Event()
    ev.add("uid", window_uid(window, environment))
    ev.add("dtstamp", (now or datetime.now(UTC)).astimezone(UTC))
    ev.add("dtstart", window.start.astimezone(UTC))
    ev.add("dtend", window.end.astimezone(UTC))
    ev.add("summary", summary)
    if description:
        ev.add("description", description)
    ev.add("sequence", 1 if cancelled else 0)
    ev.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    ev.add("transp", "OPAQUE")
    cal.add_component(ev)
    return cal.to_ical()
