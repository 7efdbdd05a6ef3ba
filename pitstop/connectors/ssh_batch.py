"""Batches over SSH (:meth:`SshConnection.run_batch`): several ops in one exec session.

One remote ``sh`` runs each op in its own subshell (so ``cd``, ``exit`` or ``umask`` in one never
reach the next), with stdin from /dev/null except for the one :class:`~.base.Put` a batch may carry
(its data is the session's stdin). After each op the shell prints a random per-batch marker with the
exit code on stdout and the marker on stderr; both streams are split on it. The script holds the
marker in two halves, so even an op that lists the script (``ps``) cannot print it. A failed put or
checked command ends the batch. Each op's timeout counts from the moment the previous op's marker
arrived. What it saves per op: on the host a session fork and a shell, on the client a channel's
round trips. ``duration_s`` of each result runs from the previous op's marker to its own, as the
client saw them arrive.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import CommandFailed, ConnectorError
from ..model import CommandResult
from .base import TAIL, BatchOp, Put
from .ssh_pid import PID_LINE

if TYPE_CHECKING:
    from .ssh import SshConnection


class PartialTimeout(TimeoutError):
    """A command ran out of time; ``out``/``err`` hold what it printed so far."""

    def __init__(self, out: bytes, err: bytes):
        super().__init__("timed out")
        self.out, self.err = out, err


class OpClock:
    """The deadline of a batch's running op: each op's timeout counts from the moment the previous
    op's marker arrived on stdout. The arrival times also give each op its duration."""

    def __init__(self, mark: bytes, timeouts: list[float]):
        self.mark, self.timeouts = mark, timeouts
        self.start = time.monotonic()
        self.ends: list[float] = []  # when each op's marker arrived
        self.pos = 0

    def due(self, out: bytes | bytearray) -> float:
        while (i := out.find(self.mark, self.pos)) >= 0:
            self.pos = i + len(self.mark)
            self.ends.append(time.monotonic())
        since = self.ends[-1] if self.ends else self.start
        return since + self.timeouts[min(len(self.ends), len(self.timeouts) - 1)]

    def duration(self, i: int) -> float:
        """Seconds op ``i`` took, from the previous op's marker to its own (as seen by the client)."""
        return self.ends[i] - (self.ends[i - 1] if i else self.start)


class Batch:
    """One batch: its script (``command``), the session's stdin (``data``), the per-op deadlines
    (``clock``) and how to read the output back into one result per op."""

    def __init__(self, conn: SshConnection, ops: Sequence[BatchOp]):
        self.conn, self.ops = conn, list(ops)
        half1, half2 = f"@pitstop-{os.urandom(4).hex()}", f"{os.urandom(4).hex()}@"
        self.mark = (half1 + half2).encode()
        self.data = b""
        self.budgets: list[float] = []
        lines, puts = [], 0
        for op in self.ops:
            if isinstance(op, Put):
                puts += 1
                if puts > 1:
                    raise ConnectorError(f"{conn.name}: a batch carries at most one put")
                self.data, body = op.data, conn._put_line(*conn._put_names(op.path), op.mode, op.sudo)
                self.budgets.append(conn.settings.command_timeout)
            else:
                body = f"( {conn.command_line(op.argv, op.sudo)} ) </dev/null"
                self.budgets.append(op.timeout or conn.settings.command_timeout)
            stop = '; [ "$r" -eq 0 ] || exit 0' if isinstance(op, Put) or op.check else ""
            marks = f"printf '%s%s%03d' {half1} {half2} \"$r\"; printf %s%s {half1} {half2} >&2"
            lines.append(f"{body}\nr=$?; {marks}{stop}")
        self.command = shlex.join(["sh", "-c", "\n".join([PID_LINE, *lines])])  # the pid first: see .ssh_pid
        self.sudo = conn.target.sudo or any(op.sudo for op in self.ops)
        self.clock = OpClock(self.mark, self.budgets)  # started now: the session opens next

    def results(self, out: bytes, err: bytes, code: int) -> list[CommandResult | None]:
        """One result per op (None for the put); raises for the op that failed or never finished."""
        conn, clock = self.conn, self.clock
        clock.due(out)  # stamp any marker the read loop has not looked at yet
        outs, errs = out.split(self.mark), err.split(self.mark)
        results: list[CommandResult | None] = []
        for i, op in enumerate(self.ops):
            o, e = (outs[i][3:] if i else outs[0]), (errs[i] if i < len(errs) else b"")
            if i + 1 >= len(outs):  # the shell never reached this op's marker
                why = f"timed out after {self.budgets[i]:g}s" if code == 124 else f"the remote shell ended with {code}"
                if isinstance(op, Put):
                    raise ConnectorError(f"{conn.name}: cannot write {conn.path(op.path)}: {why}")
                conn.history.append({"argv": op.argv, "exit_code": code, "stderr_tail": why})
                raise CommandFailed(op.argv, code, e.decode(errors="replace") + "\n" + why, conn.name)
            rc = int(outs[i + 1][:3])
            if isinstance(op, Put):
                if rc != 0:
                    detail = e.decode(errors="replace").strip()[-TAIL:] or f"exit code {rc}"
                    raise ConnectorError(f"{conn.name}: cannot write {conn.path(op.path)}: {detail}")
                results.append(None)
                continue
            res = conn._record(op.argv, rc, o, e, clock.duration(i))
            if op.check and rc != 0:
                raise CommandFailed(op.argv, rc, res.stderr, conn.name)
            results.append(res)
        return results
