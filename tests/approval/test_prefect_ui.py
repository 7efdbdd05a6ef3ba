"""The Prefect UI a person actually sees, in headless Chromium (Debian's ``chromium`` driven by Playwright from
PyPI; no browser download): a real Prefect server, a monthly run with an approval, the flow run page with its
readable name, the approval form (filled in and submitted in the browser), pitstop's step-level log lines and
the report artifact with its link to the full report. Screenshots are kept under ``tests/artifacts/prefect-ui``
(path printed)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.approval.helpers import ME, approval_runbook, flags, wait_for_request
from tests.approval.test_gate_prefect import flow_run, start_prefect, wait_paused
from tests.conftest import ROOT, report_of
from tests.runs.test_lock_and_resume import state_dir

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "tests" / "artifacts" / "prefect-ui"

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (make system-deps)")


def _shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _artifact(api: str, fid: str, key: str) -> dict[str, Any]:
    query = {"artifacts": {"flow_run_id": {"any_": [fid]}, "key": {"any_": [key]}}}
    r = httpx.post(f"{api}/artifacts/filter", json=query, timeout=10)
    r.raise_for_status()
    [art] = r.json()
    return dict(art)


def _scroll_to(page: Any, text: str, tries: int = 60) -> None:
    """The Logs tab loads lines as one scrolls: scroll down until ``text`` shows."""
    for _ in range(tries):
        found = page.get_by_text(text).first
        if page.get_by_text(text).count() and found.is_visible():
            found.scroll_into_view_if_needed()
            return
        page.mouse.wheel(0, 1200)
        page.wait_for_timeout(300)
    raise AssertionError(f"log line {text!r} not shown")


def test_flow_run_page_in_chromium(prefect_ui_server: dict[str, str], make_env: Any, tmp_path: Path) -> None:
    ui = prefect_ui_server["PREFECT_UI_URL"]
    api = prefect_ui_server["PREFECT_API_URL"]
    env = make_env()
    rb = approval_runbook(tmp_path, name="monthly", approvers=[ME, "ops-lead"], timeout="10m")
    proc = start_prefect(env, rb, prefect_ui_server)
    try:
        run_dir = wait_for_request(state_dir(env) / "runs", timeout=300)
        fid = json.loads((run_dir / "approval-request.json").read_text())["flow_run_id"]
        name = wait_paused(api, fid)["name"]
        assert re.fullmatch(r"test-monthly-manual-\d{8}T\d{4}Z", name), name
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{ui}/runs/flow-run/{fid}", wait_until="networkidle")
            page.get_by_text(name).first.wait_for(timeout=60_000)  # the readable name, not "stereotyped-bloodhound"
            page.get_by_text("Paused").first.wait_for(timeout=30_000)
            _shot(page, "1-paused-flow-run")
            assert flags(state_dir(env)) == []  # waiting with the site up

            page.get_by_role("button", name=re.compile("Resume")).first.click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("What runs once approved").wait_for(timeout=30_000)
            for text in ("approver", "decision", "comment", "purge expired rows", "does not authenticate"):
                assert dialog.get_by_text(re.compile(text, re.I)).count() > 0, text
            _shot(page, "2-approval-form")
            # fill in the form as a person would, and submit it
            for i, choice in enumerate(("ops-lead", "approve")):  # the approver and decision pickers
                dialog.locator(".p-select-button__control").nth(i).click()
                page.wait_for_timeout(500)
                for key in ("ArrowDown", "Enter", " "):
                    if page.locator("[role=option], .p-select-option").filter(
                            has_text=re.compile(rf"^\s*{choice}\s*$")).count():
                        break
                    page.keyboard.press(key)
                    page.wait_for_timeout(500)
                page.locator("[role=option], .p-select-option").filter(
                    has_text=re.compile(rf"^\s*{choice}\s*$")).first.click()
            dialog.locator("textarea").first.fill("approved from the Prefect UI form")
            _shot(page, "3-approval-form-filled")
            dialog.get_by_role("button", name=re.compile("Submit|Resume")).last.click()

            out, err = proc.communicate(timeout=400)
            assert proc.returncode == 0, err[-3000:]
            assert flow_run(api, fid)["state"]["type"] == "COMPLETED"

            page.goto(f"{ui}/runs/flow-run/{fid}", wait_until="networkidle")
            page.locator("[role=tablist]").get_by_text("Logs", exact=True).click()
            page.get_by_text("step started: pre-backup / pg_dump to storage").first.wait_for(timeout=60_000)
            page.mouse.move(700, 800)
            for text in ("waiting for approval before", "approval: approve by ops-lead via prefect",
                         "step finished: database-cleanup / purge expired rows", "rows purged from public.events",
                         "run succeeded"):
                _scroll_to(page, text)
                if text.startswith("approval:"):
                    _shot(page, "4-logs-approval")
            _shot(page, "5-logs-end")

            page.goto(f"{ui}/runs/flow-run/{fid}", wait_until="networkidle")
            page.locator("[role=tablist]").get_by_text("Artifacts", exact=True).click()
            page.get_by_text(re.compile("pitstop-test-monthly-report")).first.wait_for(timeout=60_000)
            _shot(page, "6-artifacts-tab")
            art = _artifact(api, fid, "pitstop-test-monthly-report")
            page.goto(f"{ui}/artifacts/artifact/{art['id']}", wait_until="networkidle")
            link = page.get_by_role("link", name="report.html")
            link.first.wait_for(timeout=60_000)
            href = link.first.get_attribute("href") or ""
            page.get_by_role("heading", name="Approval").first.wait_for(timeout=30_000)
            page.get_by_text("approved from the Prefect UI form").first.wait_for(timeout=30_000)
            _shot(page, "7-report-artifact")
            browser.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    report = report_of(out)
    assert report["approval"]["approver"] == "ops-lead" and report["approval"]["via"] == "prefect"
    assert report["approval"]["comment"] == "approved from the Prefect UI form"
    assert href.endswith(f"{report['run_id']}/report.html"), href
    assert Path(href.removeprefix("file://")).is_file()
    time.sleep(0)
