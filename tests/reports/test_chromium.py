"""The HTML report of a real demo run, opened in headless Chromium (Debian's ``chromium``): rendered
at desktop and phone width, screenshot taken, key sections present in the rendered DOM."""

from __future__ import annotations

import json
import re
import struct
import subprocess
from pathlib import Path

from tests.conftest import run_cli

CHROMIUM = "/usr/bin/chromium"
SECTIONS = ("summary", "timeline", "stages", "hosts", "checks", "data-parity", "metrics", "backup", "cleanup",
            "commands", "notifications", "deviations")


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
            *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_html_renders_in_chromium(make_env, tmp_path):
    proc = run_cli("run", "--env", str(make_env()), "--runbook", "monthly", "--engine", "local", "--json")
    assert proc.returncode == 0, proc.stderr
    html = Path(json.loads(proc.stdout)["run_dir"]) / "report.html"
    url = html.as_uri()

    # Self-contained: no scripts, no external stylesheets, fonts or images.
    source = html.read_text()
    assert "<script" not in source and "<link" not in source
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", source)

    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert f'id="{section}"' in dom.stdout, section
    assert 'id="status">succeeded</span>' in dom.stdout
    for text in ("Downtime announced / actual", "Window planned / actual", "window planned", "Verified by restore",
                 "data_parity", "pg_dump to storage"):
        assert text in dom.stdout, text

    for width in (1280, 400):
        shot = tmp_path / f"report-{width}.png"
        res = chromium(tmp_path, f"--screenshot={shot}", f"--window-size={width},2400", url)
        assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
        assert png_size(shot) == (width, 2400)
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank canvas


def test_failed_verification_and_truncated_reports_render_in_chromium(corpus, tmp_path):
    """A run whose backup verification failed, and a run killed inside its window (its log cut right
    after maintenance went on), rendered in full: no section replaced by a note, the failure shown."""
    from tests.reports.replay import lines_of, replay

    failed = corpus.runs["backup-verify-failed"] / "report.html"
    lines = lines_of(corpus.runs["monthly"] / "audit.jsonl")
    cut = next(i for i, x in enumerate(lines) if json.loads(x)["kind"] == "maintenance.on") + 1
    replay(tmp_path / corpus.runs["monthly"].name, lines[:cut])
    truncated = tmp_path / corpus.runs["monthly"].name / "report.html"
    resume = f"pitstop resume {corpus.runs['monthly'].name}"
    for html, status, texts in ((failed, "failed", ("Failure", "backup.verify", "no</span>", "verification failed",
                                                    "is truncated")),
                                (truncated, "crashed", ("The run stopped without finishing", "interrupted</span>",
                                                        "still open when the log stopped", "log stopped",
                                                        "not reached", resume))):
        dom = chromium(tmp_path, "--dump-dom", html.as_uri())
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert f'id="status">{status}</span>' in dom.stdout
        assert "could not be rendered" not in dom.stdout and "(minimal)" not in dom.stdout
        for section in ("summary", "timeline", "stages", "backup", "notifications", "deviations"):
            assert f'id="{section}"' in dom.stdout, (html, section)
        for text in texts:
            assert text in dom.stdout, (html, text)
        shot = tmp_path / f"{status}.png"
        res = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", html.as_uri())
        assert res.returncode == 0 and png_size(shot) == (1280, 2400) and shot.stat().st_size > 20_000
