"""Hostile secrets — quotes, backslashes, newlines, non-ASCII, '%', '+', spaces — in every encoded form.

Redaction used to run on JSON-escaped text, so ``Cn"ry\\Pw-ü-7Q9z`` was written raw. Here each hostile
secret is the database password of a real run (the test server trusts the socket, so the run succeeds
with it) and a step prints it raw and in every encoding a tool might use: JSON (ASCII and not), URL
(quote, quote_plus), shell-quoted, HTML-escaped, repr, base64 (standard and URL-safe, at every byte
alignment inside a longer stream). audit.jsonl, report.json/md/html, every file of the state directory
and the console output are scanned for every form. A property test then drives the redactor itself
over generated secrets embedded in generated text.
"""

from __future__ import annotations

import base64
import html
import json
import shlex
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pitstop.config import load_config
from pitstop.context import Redactor
from pitstop.demo import setup_hosts
from tests.conftest import demo_config
from tests.reliability.helpers import cli
from tests.reliability.results import record

HOSTILE = ['Cn"ry\\Pw-ü-7Q9z', "pa ss+wo%rd/ü?&=x", "line1\nline2'\"$(id)`x`"]

PRINT_FORMS = r"""
import base64, html, json, os, shlex, sys
from urllib.parse import quote, quote_plus
s = os.environ["PITSTOP_H_PW"]
b = s.encode()
for form in (s, json.dumps(s), json.dumps(s, ensure_ascii=False), quote(s, safe=""), quote_plus(s),
             shlex.quote(s), html.escape(s), repr(s), base64.b64encode(b).decode(),
             base64.urlsafe_b64encode(b).decode(), base64.b64encode(b"x" + b).decode(),
             base64.b64encode(b"xy" + b).decode()):
    print("form:", form)
sys.exit(3)
"""


def forms(secret: str) -> dict[str, str]:
    b = secret.encode()

    def mid(prefix: bytes) -> str:  # the secret-only part of base64 at this alignment
        data = prefix + b
        return base64.b64encode(data[: len(data) // 3 * 3]).decode()[{0: 0, 1: 2, 2: 3}[len(prefix)]:]

    out = {"raw": secret, "json": json.dumps(secret)[1:-1], "json-utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
           "url": quote(secret, safe=""), "url-plus": quote_plus(secret), "shell": shlex.quote(secret),
           "html": html.escape(secret), "repr": repr(secret)[1:-1], "b64": base64.b64encode(b).decode(),
           "b64-url": base64.urlsafe_b64encode(b).decode(), "b64-at-1": mid(b"x"), "b64-at-2": mid(b"xy")}
    return {k: v for k, v in out.items() if len(v) >= 6}


@pytest.mark.parametrize("secret", HOSTILE, ids=["quotes-backslash-umlaut", "url-specials", "newline-shell"])
def test_hostile_secrets_never_reach_an_output(tmp_path: Path, pg_data_dir: Path, seeded_db: str,
                                               secret: str) -> None:
    cfg = demo_config(tmp_path / "state", pg_data_dir, seeded_db)
    cfg["database"]["password_env"] = "PITSTOP_H_PW"
    env_path = tmp_path / "env.yaml"
    env_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    setup_hosts(load_config(str(env_path)))
    rb = tmp_path / "leak.yaml"
    rb.write_text(yaml.safe_dump({"name": "leak", "kind": "custom", "stages": [
        {"name": "preflight", "steps": [{"uses": "check.postgres_connect"}]},
        {"name": "server-tuning", "steps": [{"uses": "host.command", "destructive": False, "targets": "app",
                                             "with": {"argv": ["python3", "-c", PRINT_FORMS]}}]}]}))
    res = cli("run", "--env", str(env_path), "--runbook", str(rb), "--engine", "local", "--json",
              env={"PITSTOP_H_PW": secret})
    assert res.returncode == 1, res.stderr[-2000:]  # the step exits 3 on purpose: its output is in the report
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    assert "form:" in (run_dir / "report.json").read_text(), "the step's output never reached the report"
    needles = forms(secret)
    hits = []
    outputs = {"console": (res.stdout + res.stderr).encode()}
    outputs.update({str(p): p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()
                    and "pgdata" not in p.parts})
    for where, data in outputs.items():
        text = data.decode("utf-8", errors="replace")
        hits += [f"{where}: {name}" for name, form in needles.items() if form in text]
    record("secret_forms", secret_forms=len(needles) * len(outputs), secret_leaks=len(hits))
    assert hits == [], hits


SECRET = st.text(st.characters(blacklist_categories=["Cs"]), min_size=8, max_size=24).filter(
    lambda s: len(s.strip()) >= 8)


@settings(max_examples=300, deadline=None)
@given(secret=SECRET, before=st.text(max_size=20), after=st.text(max_size=20), which=st.integers(0, 11))
def test_the_redactor_removes_every_form_of_generated_secrets(secret: str, before: str, after: str,
                                                              which: int) -> None:
    redact = Redactor([secret])
    candidates = sorted(forms(secret).values())
    form = candidates[which % len(candidates)]
    assert form not in redact(before + form + after)
