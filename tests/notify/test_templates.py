"""Every built-in template × style × event renders a non-empty subject and body, for internal and customer
audiences (``style: short`` used to give ``stage.completed`` a title only, which apprise refuses), and
`pitstop notify preview` shows what each audience would receive."""

from __future__ import annotations

import json

import pytest

from pitstop.config import AudienceConfig, load_config
from pitstop.notify.audiences import Audience
from pitstop.notify.preview import EVENTS, render_for
from tests.conftest import run_cli


@pytest.mark.parametrize("style", ["full", "short"])
@pytest.mark.parametrize("audience", ["ops", "customers"])
@pytest.mark.parametrize("event", EVENTS)
def test_every_builtin_template_renders_a_title_and_a_body(event: str, style: str, audience: str) -> None:
    cfg = load_config("demo")
    cfg.notifications.templates = {}  # the built-ins only
    aud = Audience(audience, AudienceConfig(), "Europe/Berlin")
    subject, body = render_for(cfg, event, aud, style)
    assert subject.strip() and body.strip(), (event, style, audience, subject, body)
    if audience == "customers":
        assert "lock timeout" not in body and "database-cleanup" not in body


def test_notify_preview_renders_each_route() -> None:
    res = run_cli("notify", "preview", "run.failed", "--env", "demo", "--json")
    assert res.returncode == 0, res.stderr
    items = json.loads(res.stdout)
    assert {i["audience"] for i in items} >= {"ops", "customers"}
    assert all(i["subject"] and i["body"] for i in items)
    bad = run_cli("notify", "preview", "run.nope", "--env", "demo")
    assert bad.returncode == 2 and "known:" in bad.stderr
