"""Remote command lines that report their pid, so a command that runs out of time can be stopped.

Closing an SSH channel does not stop a command that prints nothing (sshd keeps it running), and
sshd refuses the SSH ``signal`` request for root logins. So every command line pitstop runs first
reports, on stderr, the pid of the shell sshd started for it (:data:`PID_LINE`): that shell is the
session leader, so its pid is the process group of the command and all its children. On a timeout
the connection runs :data:`STOP_SCRIPT` on a second channel (TERM to that group, KILL after 2 s).
The dead-man watcher starts its own session (``setsid``) and is never in that group.
"""

from __future__ import annotations

import re
import shlex

PID_LINE = "printf '@pitstop-pid:%s@\\n' \"$$\" >&2"
_PID_RE = re.compile(rb"\A@pitstop-pid:(\d+)@\n")
STOP_SCRIPT = (  # $1: the pid PID_LINE reported; "-$1" is its process group (dash's kill takes no "--")
    'kill -TERM "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null; i=0; '
    'while [ "$i" -lt 10 ] && { kill -0 "-$1" || kill -0 "$1"; } 2>/dev/null; do sleep 0.2; i=$((i + 1)); done; '
    'kill -KILL "-$1" 2>/dev/null; kill -KILL "$1" 2>/dev/null; exit 0'
)


def reporting_pid(command: list[str]) -> str:
    """``command`` (an argv) as one quoted line that reports its pid first, then execs it."""
    return shlex.join(["sh", "-c", PID_LINE + '; exec "$@"', "sh", *command])


def split_pid(err: bytes) -> tuple[int | None, bytes]:
    """(the pid :data:`PID_LINE` reported or None, stderr without that line)."""
    m = _PID_RE.match(err)
    return (int(m.group(1)), err[m.end():]) if m else (None, err)
