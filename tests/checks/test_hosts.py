"""Host checks on local sandbox hosts, and maintenance_off against a real HTTP server."""

from __future__ import annotations

from pitstop.model import CheckStatus

from .conftest import run


def test_disk_and_inodes(ctx):
    r = run(ctx, "disk_free", {"path": "/", "min_free_pct": 0}, host="web-1")
    assert r.status == CheckStatus.PASS and r.evidence["size_kb"] > 0
    assert run(ctx, "disk_free", {"min_free_pct": 100}, host="web-1").status == CheckStatus.FAIL
    r = run(ctx, "inodes_free", {"min_free_pct": 0}, host="web-1")
    assert r.status == CheckStatus.PASS and "inodes" in r.evidence
    if r.evidence["inodes"]:
        assert run(ctx, "inodes_free", {"min_free_pct": 100}, host="web-1").status == CheckStatus.FAIL


def test_service_active_by_command_and_systemd(ctx):
    assert run(ctx, "service_active", {"argv": ["true"]}, host="app-1").status == CheckStatus.PASS
    r = run(ctx, "service_active", {"argv": ["sh", "-c", "echo down; exit 3"]}, host="app-1")
    assert r.status == CheckStatus.FAIL and r.evidence["exit_code"] == 3 and "down" in r.evidence["stdout_tail"]
    # systemctl: inactive / missing here either way, so a failure with the evidence of why.
    r = run(ctx, "service_active", {"unit": "pitstop-does-not-exist.service"}, host="app-1")
    assert r.status == CheckStatus.FAIL


def test_maintenance_off_flag_and_site(ctx, http_url):
    conn = ctx.host("web-1")
    flag = ctx.cfg.maintenance.flag_path
    conn.put(flag, b"{}")
    r = run(ctx, "maintenance_off", {}, host="web-1")
    assert r.status == CheckStatus.FAIL and r.evidence["flag_present"] is True
    conn.remove(flag)
    assert run(ctx, "maintenance_off", {}, host="web-1").status == CheckStatus.PASS
    ok = run(ctx, "maintenance_off", {"url": f"{http_url}/?h={{host}}"}, host="web-1")
    assert ok.status == CheckStatus.PASS and ok.evidence["url"].endswith("?h=web-1")
    down = run(ctx, "maintenance_off", {"url": f"{http_url}/maint"}, host="web-1")
    assert down.status == CheckStatus.FAIL
    assert down.evidence["http_status"] == 503 and down.evidence["retry_after"] == "300"
    assert "503 (maintenance page)" in down.observed
