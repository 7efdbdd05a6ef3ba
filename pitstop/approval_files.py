"""The approval gate through files in the run folder: ``pitstop approve`` / ``reject`` and the run waiting.

The run writes ``approval-request.json`` (0600) and polls for ``approval-decision.json``, which the CLI writes
atomically (a private temporary file renamed into place). Before acting on a decision file the run checks it
is a regular file (not a link), that its owner is the approver it names (or root), that it answers this
request, and that the approver is one of the request's; anything else is recorded and ignored, and the run
goes on waiting. A consumed decision is kept as ``approval-decision.<request id>.json`` (sealed by the
manifest with the rest of the folder).
"""

from __future__ import annotations

import os
import pwd
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from .approval import DECISION_FILE, REQUEST_FILE, ApprovalDecision, ApprovalRequest, Decision
from .errors import InputError
from .fsmodes import private_opener

if TYPE_CHECKING:
    from .context import RunContext

POLL_S = 1.0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", opener=lambda p, f: private_opener(p, f | os.O_EXCL)) as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_request(run_dir: Path, request: ApprovalRequest) -> None:
    _write_atomic(run_dir / REQUEST_FILE, request.model_dump_json(indent=2) + "\n")


def _read_private(path: Path) -> tuple[str, os.stat_result]:
    """A regular file's text, opened without following a link, with its stat (owner checked by the caller)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, encoding="utf-8") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        return fh.read(64 * 1024), st


def read_request(run_dir: Path) -> ApprovalRequest:
    try:
        text, _ = _read_private(run_dir / REQUEST_FILE)
        return ApprovalRequest.model_validate_json(text)
    except FileNotFoundError:
        raise InputError(f"run {run_dir.name} has not asked for approval (no {REQUEST_FILE} in {run_dir})") from None
    except (OSError, ValueError, ValidationError) as exc:
        raise InputError(f"{run_dir / REQUEST_FILE} cannot be read as an approval request "
                         f"({str(exc).splitlines()[0]})") from None


def os_approver() -> str:
    """The approver ``pitstop approve`` acts as: the effective OS user (through ``sudo`` to root, the user
    sudo names: root could claim any name anyway). Never ``$USER``/``$LOGNAME``, which anyone can set."""
    uid = os.geteuid()
    if uid == 0 and os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise InputError(f"uid {uid} has no user name: an approver must be a named OS user") from None


def write_decision(run_dir: Path, request: ApprovalRequest, approver: str, decision: Decision, comment: str) -> Path:
    """The CLI's side: the decision file, written atomically, 0600. Refused when one is already waiting."""
    path = run_dir / DECISION_FILE
    if path.exists() or path.is_symlink():
        raise InputError(f"a decision for run {request.run_id} is already waiting to be read ({path}); "
                         "the run reads it within seconds")
    d = ApprovalDecision(run_id=request.run_id, request_id=request.request_id, approver=approver, decision=decision,
                         comment=comment, via="cli", decided_at=datetime.now(UTC).isoformat())
    _write_atomic(path, d.model_dump_json(indent=2) + "\n")
    return path


def check_decision(path: Path, request: ApprovalRequest) -> ApprovalDecision:
    """What a decision file says, checked before the run acts on it; ValueError says what is wrong."""
    text, st = _read_private(path)
    try:
        d = ApprovalDecision.model_validate_json(text)
    except ValidationError as exc:
        raise ValueError(f"not a valid decision ({exc.errors()[0]['msg']})") from None
    if d.run_id != request.run_id or d.request_id != request.request_id:
        raise ValueError(f"answers another request ({d.run_id} {d.request_id})")
    if d.approver not in request.approvers:
        raise ValueError(f"{d.approver!r} is not an approver of this run ({', '.join(request.approvers)})")
    try:
        uid = pwd.getpwnam(d.approver).pw_uid
    except KeyError:
        raise ValueError(f"approver {d.approver!r} is not a user on this machine") from None
    if st.st_uid not in (uid, 0):
        raise ValueError(f"written by uid {st.st_uid}, not by {d.approver!r} (uid {uid})")
    return d


class FileWaiter:
    """Waits for ``approval-decision.json`` in the run folder (``--engine local``, or a flow run without a
    Prefect server to pause on)."""

    mechanism: Literal["cli", "prefect"] = "cli"
    flow_run_id: str | None = None

    def __init__(self, sleep: Callable[[float], None] = time.sleep, poll_s: float = POLL_S):
        self.sleep, self.poll_s = sleep, poll_s

    def wait(self, request: ApprovalRequest, ctx: RunContext) -> ApprovalDecision | None:
        path = ctx.run_dir / DECISION_FILE
        deadline = time.monotonic() + request.timeout_s
        while True:
            if path.exists() or path.is_symlink():
                try:
                    decision = check_decision(path, request)
                except (OSError, ValueError) as exc:
                    ctx.event("approval.invalid", request_id=request.request_id, error=ctx.redact(str(exc))[:300])
                    path.unlink(missing_ok=True)
                else:
                    path.replace(path.with_name(f"approval-decision.{request.request_id}.json"))
                    return decision
            if time.monotonic() >= deadline:
                return None
            self.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))


def pending(run_dir: Path) -> ApprovalRequest:
    """The request a run is waiting on now; InputError (exit 2) if it waits for none."""
    from .audit import read_events

    request = read_request(run_dir)
    events = list(read_events(run_dir / "audit.jsonl")) if (run_dir / "audit.jsonl").is_file() else []
    asked = [e for e in events if e["kind"] == "approval.requested"
             and e["data"].get("request_id") == request.request_id]
    ended = [e["kind"] for e in events if e["kind"] in ("approval.decided", "approval.timed_out", "approval.failed",
                                                        "approval.invalid", "run.finished")
             and (e["kind"] == "run.finished" or e["data"].get("request_id") == request.request_id)]
    if not asked or any(k != "approval.invalid" for k in ended):
        raise InputError(f"run {run_dir.name} is not waiting for approval"
                         + (f" (its last request ended: {', '.join(ended)})" if ended else ""))
    return request

