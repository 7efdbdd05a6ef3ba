"""The redactor itself, over hypothesis-drawn hostile secrets: every encoded form is removed wherever it
sits, a text cut inside a secret keeps fewer than EDGE_MIN of its characters, secrets below MIN_SECRET are
left alone (and refused before a run), and the audit log scrubs raw values before it serialises them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pitstop.audit import AuditLog
from pitstop.redact import EDGE_MIN, MIN_SECRET, Redactor, encoded_forms
from tests.conftest import run_cli

from .secret_forms import forms, hostile

TEXT = st.text(max_size=30)


@settings(max_examples=400, deadline=None)
@given(secret=hostile(min_size=8), before=TEXT, after=TEXT, which=st.integers(0, 40))
def test_every_form_is_removed_wherever_it_sits(secret: str, before: str, after: str, which: int) -> None:
    named = sorted(forms(secret).items())
    _, form = named[which % len(named)]
    assume(form not in before and form not in after)
    assert form not in Redactor([secret])(before + form + after)


@settings(max_examples=300, deadline=None)
@given(secret=hostile(min_size=8), cut=st.integers(1, 40), after=TEXT, before=TEXT)
def test_a_text_cut_inside_a_secret_keeps_less_than_edge_min_of_it(secret: str, cut: int, after: str,
                                                                     before: str) -> None:
    redact = Redactor([secret])
    cut = cut % (len(secret) - 1) + 1  # 1 .. len-1
    tail, head = secret[cut:], secret[:cut]
    out = redact(tail + after)
    if len(tail) >= EDGE_MIN:
        assert not out.startswith(tail), (tail, out)
    out = redact(before + head)
    if len(head) >= EDGE_MIN:
        assert not out.endswith(head), (head, out)


def test_short_secrets_are_left_alone_and_refused_before_a_run(make_env: Any) -> None:
    assert MIN_SECRET == 4
    assert Redactor(["abc"])("abc and abcd") == "abc and abcd"
    assert Redactor(["abcd"])("abc and abcd") == "abc and ***"

    def with_password(cfg: dict[str, Any]) -> None:
        cfg["database"]["password_env"] = "PITSTOP_SHORT_PW"

    env = make_env(with_password)
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local",
                  env={"PITSTOP_SHORT_PW": "pw1"})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "PITSTOP_SHORT_PW is shorter than 4 characters" in res.stderr and "pw1" not in res.stderr
    assert "Traceback" not in res.stderr


class Opaque:
    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


@settings(max_examples=100, deadline=None)
@given(secret=hostile(min_size=8))
def test_the_audit_log_scrubs_raw_values_before_serialising(tmp_path_factory: Any, secret: str) -> None:
    path = Path(tmp_path_factory.mktemp("audit")) / "audit.jsonl"
    log = AuditLog(path, Redactor([secret]))
    log.emit("step.failed", error=f"connect failed: {secret}", obj=Opaque(f"dsn password={secret}"),
             nested={f"key {secret}": [secret, {"deep": secret + "\n"}]}, number=3)
    data = path.read_bytes()
    text = data.decode()
    leaked = [name for name, form in forms(secret).items() if form.encode() in data or form in text]
    assert leaked == [], leaked
    event = json.loads(text)
    assert event["data"]["number"] == 3 and "***" in event["data"]["error"]


def test_forms_cover_the_issue_secret() -> None:
    secret = 'Cn"ry\\Pw-ü-7Q9z'
    registered = encoded_forms(secret)
    missing = [name for name, form in forms(secret).items() if form not in registered]
    assert missing == []
