"""The CLI's last-resort error lines name the service and what to do (pitstop.cli_errors)."""

from __future__ import annotations

from pitstop.cli_errors import describe, hosts_failed


def test_prefect_ephemeral_server_timeout_says_what_to_do() -> None:
    # the exception Prefect raises when its in-process API server does not come up in time
    line = describe(RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server."))
    assert line.startswith("Prefect: Timed out") and "--engine local" in line
    assert "please report it" not in line


def test_hosts_failed_names_the_first_error_and_the_other_hosts() -> None:
    line = hosts_failed([("web-1", "web-1: cannot connect over SSH to u@10.0.0.1:22 (refused); check x"),
                         ("web-2", "cannot connect over SSH to u@10.0.0.2:22 (refused); check x")], "reached")
    assert line == ("2 host(s) could not be reached: web-1: cannot connect over SSH to u@10.0.0.1:22 (refused); "
                    "check x (also: web-2)")
