"""The bad-input corpus: malformed configs and runbooks, each a text edit of a known-good file.

A case names the file it breaks (``config`` or ``runbook``), the edit, and a *needle*: text that
appears on the line the error must point at (``None``: any line of that file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

UNSET = "PITSTOP_REL_NEVER_SET"


@dataclass(frozen=True)
class Case:
    id: str
    file: str  # "config" | "runbook"
    edit: Callable[[str], str]
    needle: str | None


def sub(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


def append(block: str) -> Callable[[str], str]:
    return lambda text: text.rstrip("\n") + "\n" + block


def retention(rule: str) -> Callable[[str], str]:
    return sub("retention:\n", f"retention:\n{rule}")


def schedule(spec: str) -> Callable[[str], str]:
    return sub("schedules:\n", f"schedules:\n  broken: {spec}\n")


def step(yaml_step: str) -> Callable[[str], str]:
    """Insert a step (written at 4-space indent) at the top of the preflight stage."""
    body = "".join("  " + line for line in yaml_step.splitlines(keepends=True))
    return sub("  - name: preflight\n    steps:\n", f"  - name: preflight\n    steps:\n{body}")


HTTP = ("maintenance:\n  strategy: http\n  http:\n    on: {url: 'http://127.0.0.1:9/on?ttl={ttl_seconds}'}\n"
        "    off: {url: 'http://127.0.0.1:9/off'}\n    headers:\n      - {name: Authorization, value_env: " + UNSET +
        "}\n  flag_path:")

CONFIG_CASES = [
    Case("yaml-unclosed-flow", "config", sub("  dbname: postgres", "  dbname: [postgres"), None),
    Case("yaml-bad-indent", "config", sub("  user: postgres", "     user: postgres\n  bad"), None),
    Case("yaml-duplicate-key", "config", sub("  user: postgres", "  user: postgres\n  user: root"), "user: root"),
    Case("yaml-tab", "config", sub("  user: postgres", "\tuser: postgres"), None),
    Case("not-a-mapping", "config", lambda t: "- just\n- a list\n", None),
    Case("empty-file", "config", lambda t: "", None),
    Case("wrong-type-port", "config", sub("  user: postgres", "  user: postgres\n  port: fifty"), "port: fifty"),
    Case("port-out-of-range", "config", sub("  user: postgres", "  user: postgres\n  port: 70000"), "port: 70000"),
    Case("bad-duration", "config", sub("  ttl_margin: 30m", "  ttl_margin: soon"), "ttl_margin"),
    Case("negative-duration", "config", sub("  ttl_margin: 30m", "  ttl_margin: -5m"), "ttl_margin"),
    Case("unknown-top-key", "config", append("colour: blue\n"), "colour: blue"),
    Case("unknown-nested-key", "config", sub("  kind: local", "  kind: local\n  bukket: x"), "bukket"),
    Case("missing-name", "config", sub("name: demo\n", ""), None),
    Case("unknown-host-in-group", "config", sub("web: [web-1, web-2]", "web: [web-1, web-9]"), "web-9"),
    Case("unknown-maintenance-group", "config", sub("  targets: web", "  targets: nowhere"), "targets: nowhere"),
    Case("unknown-storage-kind", "config", sub("  kind: local", "  kind: ftp"), "kind: ftp"),
    Case("s3-without-bucket", "config", sub("  kind: local", "  kind: s3"), None),
    Case("unknown-timezone", "config", sub("timezone: Europe/Berlin", "timezone: Mars/Olympus"), "Mars"),
    Case("bad-sslmode", "config", sub("  user: postgres", "  user: postgres\n  sslmode: maybe"), "sslmode"),
    Case("host-name-injection", "config", sub("  web-2: {", "  'web-2;rm -rf /': {"), "rm -rf"),
    Case("unknown-channel-kind", "config", sub("console: {kind: console}", "console: {kind: pigeon}"), "pigeon"),
    Case("apprise-without-url", "config", sub("console: {kind: console}", "console: {kind: apprise}"), "apprise"),
    Case("unknown-cleanup-profile", "config", append("cleanup: {profile: reckless}\n"), "reckless"),
    Case("archive-prefix-traversal", "config", append("cleanup: {archive_prefix: '../../etc'}\n"), "archive_prefix"),
    Case("deadman-ttl-zero", "config", sub("  ttl_margin: 30m", "  ttl_margin: 30m\n  deadman: {ttl: 0s}"), "deadman"),
    Case("retention-table-injection", "config",
         retention("  - {table: 'events; DROP TABLE users', column: created_at, older_than: 90d}\n"), "DROP TABLE"),
    Case("retention-column-injection", "config",
         retention("  - {table: events, column: 'created_at\" OR 1=1 --', older_than: 90d}\n"), "OR 1=1"),
    Case("retention-schema-injection", "config",
         retention("  - {table: events, schema: 'public\";--', column: created_at, older_than: 90d}\n"), "public"),
    Case("retention-filter-column-injection", "config",
         retention("  - {table: events, column: created_at, older_than: 90d, "
                   "where: [{column: 'kind; drop', op: '=', value: x}]}\n"), "kind; drop"),
    Case("retention-filter-op-injection", "config",
         retention("  - {table: events, column: created_at, older_than: 90d, "
                   "where: [{column: kind, op: '= 1 OR 1=1 --', value: x}]}\n"), "OR 1=1"),
    Case("retention-deletes-everything", "config",
         retention("  - {table: events, column: created_at, older_than: 0s}\n"), "older_than: 0s"),
    Case("retention-negative-age", "config",
         retention("  - {table: events, column: created_at, older_than: -30d}\n"), "older_than: -30d"),
    Case("retention-share-above-one", "config",
         retention("  - {table: events, column: created_at, older_than: 30d, max_share: 1.5}\n"), "max_share"),
    Case("retention-missing-column", "config", retention("  - {table: events, older_than: 30d}\n"), "table: events"),
    Case("schedule-feb-30", "config",
         schedule("{rrule: 'FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30', at: '02:00', duration: 2h, runbook: monthly}"),
         "FREQ=YEARLY"),
    Case("schedule-april-31", "config",
         schedule("{rrule: 'FREQ=MONTHLY;BYMONTH=4;BYMONTHDAY=31', at: '02:00', duration: 2h, runbook: monthly}"),
         "BYMONTHDAY=31"),
    Case("schedule-past-until", "config",
         schedule("{rrule: 'FREQ=DAILY;UNTIL=20010101T000000', at: '02:00', duration: 2h, runbook: monthly}"),
         "UNTIL"),
    Case("schedule-garbage-rrule", "config",
         schedule("{rrule: 'FREQ=SOMETIMES', at: '02:00', duration: 2h, runbook: monthly}"), "SOMETIMES"),
    Case("schedule-cron-4-fields", "config",
         schedule("{cron: '0 2 * *', at: '02:00', duration: 2h, runbook: monthly}"), "cron"),
    Case("schedule-hour-25", "config",
         schedule("{rrule: 'FREQ=WEEKLY;BYDAY=SU', at: '25:00', duration: 2h, runbook: monthly}"), "25:00"),
    Case("schedule-cutoff-too-long", "config",
         schedule("{rrule: 'FREQ=WEEKLY;BYDAY=SU', at: '02:00', duration: 1h, cutoff: 2h, runbook: monthly}"),
         "cutoff"),
    Case("blackout-without-reason", "config", sub("    - {date: 2027-12-31, reason: \"year-end close\"}",
                                                  "    - {date: 2027-12-31}"), "2027-12-31"),
    Case("secret-db-password-unset", "config",
         sub("  user: postgres", f"  user: postgres\n  password_env: {UNSET}"), "password_env"),
    Case("secret-apprise-url-unset", "config",
         sub("console: {kind: console}", f"console: {{kind: apprise, url_env: {UNSET}}}"), "url_env"),
    Case("secret-s3-keys-unset", "config",
         sub("  kind: local", f"  kind: s3\n  bucket: b\n  access_key_env: {UNSET}\n  secret_key_env: {UNSET}_2"),
         "access_key_env"),
    Case("secret-http-header-unset", "config", sub("maintenance:\n  strategy: flag_file\n  flag_path:", HTTP),
         "value_env"),
]

RUNBOOK_CASES = [
    Case("rb-yaml-syntax", "runbook", sub("name: monthly", "name: [monthly"), None),
    Case("rb-unknown-step", "runbook", sub("uses: database.vacuum_analyze", "uses: database.vacuum_everything"),
         "vacuum_everything"),
    Case("rb-unknown-check", "runbook", sub("uses: check.invalid_indexes", "uses: check.no_such_check"),
         "no_such_check"),
    Case("rb-wrong-param-type", "runbook", sub("min_free_pct: 5}\n", "min_free_pct: plenty}\n"), "plenty"),
    Case("rb-unknown-param", "runbook", sub("with: {temp_older_than_days: 10}", "with: {temp_older_than_days: 10, "
                                                                                  "rm_rf: true}"), "rm_rf"),
    Case("rb-unknown-group", "runbook", sub("targets: app", "targets: workers"), "workers"),
    Case("rb-group-injection", "runbook", sub("targets: app", "targets: 'app; reboot'"), "reboot"),
    Case("rb-stage-order", "runbook", sub("  - name: maintenance-off", "  - name: maintenance-offf"), None),
    Case("rb-bad-expected-downtime", "runbook", sub("expected_downtime: 5m", "expected_downtime: a while"),
         "a while"),
    Case("rb-steps-not-a-list", "runbook", step("    - uses: check.postgres_connect\n      with: [1, 2]\n"),
         "with: [1, 2]"),
    Case("rb-argv-not-list", "runbook", sub("with: {argv: [touch, reload-requested]}",
                                            "with: {argv: 'touch x; rm -rf /'}"), "argv"),
    Case("rb-empty-argv", "runbook", sub("with: {argv: [touch, reload-requested]}", "with: {argv: []}"), "argv"),
    Case("rb-negative-days", "runbook", sub("compress_after_days: 1", "compress_after_days: -1"),
         "compress_after_days"),
    Case("rb-sql-not-text", "runbook", sub("          sql: SELECT count(*)", "          sql: [1]\n          x: SELECT"),
         None),
    Case("rb-missing-uses", "runbook", step("    - name: nothing to use\n"), "nothing to use"),
    Case("rb-unknown-step-key", "runbook", step("    - uses: check.postgres_connect\n      colour: red\n"), "colour"),
    Case("rb-stages-not-a-list", "runbook", lambda t: "name: empty\nkind: monthly\nstages: {a: 1}\n", "stages"),
    Case("rb-cycle", "runbook", step("    - {uses: check.postgres_connect, id: a, after: [b]}\n"
                                     "    - {uses: check.postgres_connect, id: b, after: [a]}\n"), "id: a"),
    Case("rb-self-cycle", "runbook", step("    - {uses: check.postgres_connect, id: a, after: [a]}\n"), "id: a"),
    Case("rb-after-unknown", "runbook", step("    - {uses: check.postgres_connect, id: a, after: [ghost]}\n"),
         "ghost"),
]

CASES = CONFIG_CASES + RUNBOOK_CASES
