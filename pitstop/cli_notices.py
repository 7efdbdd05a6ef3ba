"""``pitstop notices``: what advance notices will go out and when, and sending what is due now."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .console import safe_console
from .errors import InputError

app = typer.Typer(no_args_is_help=True, help="Advance notices of scheduled maintenance windows.")
out = safe_console()

EnvOpt = Annotated[str, typer.Option("--env", "-e", help="environment name (config/<env>.yaml) or a path")]
NowOpt = Annotated[str | None, typer.Option("--now", help="rehearse at this ISO time (default: now); send-due "
                                             "then only previews: nothing is sent or recorded")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


@app.command("plan")
def plan(env: EnvOpt, now: NowOpt = None, as_json: JsonOpt = False) -> None:
    """List the notices of upcoming windows: when each goes out, to which channel, and its state."""
    from .cli_prefect import read_secret_block
    from .config import load_config
    from .notify.channels import build_channels
    from .notify.notices import parse_now, plan_notices

    cfg = load_config(env)
    when = parse_now(now)
    rows = plan_notices(cfg, when, build_channels(cfg, read_secret_block))
    if as_json:
        sys.stdout.write(json.dumps([r.model_dump(mode="json") for r in rows], indent=2) + "\n")
        return
    from .console import print_rows
    from .notify.audiences import fmt_local

    as_of = when.isoformat(timespec="minutes") + (" (rehearsal time; sent times are real)" if now else "")
    tz = cfg.timezone
    cells = [[f"{r.schedule} {fmt_local(r.window_start, tz, '%Y-%m-%d %H:%M %Z')}", r.notice,
              fmt_local(r.due_at, tz, "%Y-%m-%d %H:%M %Z"), r.channel, r.audience,
              r.state + (f" ({r.skipped})" if r.skipped else "") + (f" at {r.sent_at}" if r.sent_at else "")]
             for r in rows]
    # never cut a word (a notice or channel name is typed into other commands): pitstop.console.print_rows
    print_rows(out, f"notices of {cfg.name} at {as_of}", ["window", "notice", "due at", "channel", "audience",
                                                          "state"], cells)


@app.command("send-due")
def send_due(env: EnvOpt, now: NowOpt = None, as_json: JsonOpt = False) -> None:
    """Send every notice that is due now, exactly once (safe to run concurrently and repeatedly).

    With ``--now`` it is a rehearsal: it shows what would be sent at that time, rendered for each channel,
    and sends and records nothing (a pretended time never becomes a send time)."""
    from .cli_prefect import read_secret_block
    from .config import load_config
    from .notify import notices
    from .notify.channels import build_channels

    cfg = load_config(env)
    when = notices.parse_now(now)
    rehearsal = now is not None
    channels = build_channels(cfg, read_secret_block)
    results = notices.preview_due(cfg, when, channels) if rehearsal else \
        notices.send_due(cfg, clock=notices.system_clock, channels=channels)
    if as_json:
        sys.stdout.write(json.dumps([r.model_dump(mode="json") for r in results], indent=2) + "\n")
    else:
        from rich.markup import escape

        if rehearsal:
            out.print(f"[bold]rehearsal at {when.isoformat(timespec='minutes')}[/bold]: nothing is sent or recorded")
        for r in results:
            marks = {"sent": "[green]sent[/green]", "failed": "[red]failed[/red]", "preview": "[cyan]would send[/cyan]"}
            mark = marks.get(r.status, f"[dim]{r.status}[/dim]")
            detail = f" ({r.error})" if r.error else (f" ({r.audience}): {r.subject}" if rehearsal else "")
            out.print(f"{mark} {escape(f'{r.notice} of {r.window_id} → {r.channel}{detail}')}", soft_wrap=True)
        if not results:
            out.print("nothing due" + (" at that time" if rehearsal else ""))
    if failed := [r for r in results if r.status == "failed"]:
        from rich.markup import escape

        safe_console(stderr=True).print(
            f"[bold red]error:[/bold red] {len(failed)} delivery(ies) failed, retried by the next send-due: "
            f"{escape(str(failed[0].error))}", soft_wrap=True)
        raise typer.Exit(1)


notify_app = typer.Typer(no_args_is_help=True, help="Preview notifications.")


@notify_app.command("preview")
def notify_preview(event: Annotated[str, typer.Argument(help="event, e.g. run.failed or notice.advance")],
                   env: EnvOpt, channel: Annotated[str | None, typer.Option("--channel", help="one channel")] = None,
                   as_json: JsonOpt = False) -> None:
    """Render what each audience of each channel would receive for EVENT (sample run; nothing is sent)."""
    from .config import load_config
    from .notify.preview import EVENTS, preview

    if event not in EVENTS:
        raise InputError(f"unknown event {event!r} (known: {', '.join(EVENTS)})")
    cfg = load_config(env)
    if channel is not None and channel not in cfg.notifications.channels:
        raise InputError(f"no channel {channel!r} (channels: {', '.join(cfg.notifications.channels)})")
    from .cli_prefect import read_secret_block

    items = preview(cfg, event, channel, read_secret_block)
    if as_json:
        sys.stdout.write(json.dumps(items, indent=2) + "\n")
        return
    if not items:
        out.print(f"no audience of {'channel ' + channel if channel else 'any channel'} receives {event}")
    for it in items:
        out.print(f"[bold]{it['channel']}[/bold] → {it['audience']} ({it['style']})", soft_wrap=True)
        out.print(f"  subject: {it['subject']}", markup=False, soft_wrap=True)
        for line in it["body"].splitlines():
            out.print(f"  | {line}", markup=False, soft_wrap=True)
