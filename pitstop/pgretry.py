"""The one retry policy for PostgreSQL work: which errors are transient, how often and how long to retry.

Every step and check that talks to the platform database wraps a *whole unit of work* in
:func:`call` (or the :func:`retry_pg` decorator): each attempt opens a fresh connection, so a retry
is also a reconnect. Units must be safe to repeat — read-only checks, or work that commits its own
progress (the purge records every batch in the same transaction as its DELETE, so a repeated
attempt resumes the episode instead of deleting twice).

Transient (retried, tenacity, bounded attempts, exponential backoff with full jitter):

* ``57P01`` admin_shutdown (``pg_terminate_backend``), ``57P02`` crash_shutdown, ``57P03`` cannot_connect_now;
* class ``08`` connection exceptions, and a broken connection without SQLSTATE ("server closed the
  connection unexpectedly", "the connection is closed");
* ``40001`` serialization_failure, ``40P01`` deadlock_detected;
* a connect that failed because the server is unreachable, starting up or shutting down.

Permanent (raised at once, never retried): everything else — ``28xxx`` authentication, ``42601``
syntax, ``42P01`` undefined table, ``42501`` insufficient privilege, unknown role or database ...
``55P03`` lock_not_available is *not* in this policy: the purge already backs off on it batch by
batch (``cleanup.backoff``) and VACUUM has its own bounded lock retries.

Each retry leaves a ``retry`` audit event (``what: pg.<unit>``, ``attempt``, ``error``,
``sqlstate``, ``wait_s``), like S3, SSH and notification retries.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import psycopg
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from .errors import TransientError

if TYPE_CHECKING:
    from .runview import EventSink

P = ParamSpec("P")
T = TypeVar("T")

ATTEMPTS = 5  # attempts per unit of work (the first one included)
WAIT_MULTIPLIER = 0.25  # seconds: full jitter over 0.25 · 2^n ...
MAX_WAIT = 4.0  # ... capped at this many seconds per wait

TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})
TRANSIENT_CLASSES = ("08",)
# libpq's wording when a connect fails for a reason that goes away by itself.
_CONNECT_TRANSIENT = re.compile(
    r"connection refused|could not connect|no such file or directory|timeout expired|server closed the connection"
    r"|the database system is (starting up|shutting down|in recovery|not yet accepting)"
    r"|terminating connection|connection reset|could not receive data|ssl syscall error", re.IGNORECASE)


class PgUnavailable(TransientError):
    """The PostgreSQL server could not be reached (or went away) for a reason worth retrying."""


def sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return str(state) if state else None


def connect_failure_is_transient(message: str) -> bool:
    """For a failed *connect* (libpq gives no SQLSTATE): unreachable/starting/stopping server only."""
    return bool(_CONNECT_TRANSIENT.search(message))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PgUnavailable):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = sqlstate(exc)
    if state:
        return state in TRANSIENT_SQLSTATES or state.startswith(TRANSIENT_CLASSES)
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    message = str(exc)
    if message.startswith("connection failed") or "connection to server" in message:
        return connect_failure_is_transient(message)  # a failed connect: unknown role, bad password ... are not
    return True  # no SQLSTATE: the client library lost the connection (broken socket, closed connection)


def describe(exc: BaseException) -> str:
    state = sqlstate(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}" + (f" (SQLSTATE {state})" if state else "") + f": {first}"


def retrying(on_retry: Callable[..., None] | None = None, *, what: str = "pg", attempts: int = ATTEMPTS,
             max_wait: float = MAX_WAIT, sleep: Callable[[float], None] = time.sleep) -> Retrying:
    """A tenacity ``Retrying`` with this policy; ``on_retry(**data)`` is told about every retry."""

    def note(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and exc is not None:
            on_retry(what=what, attempt=state.attempt_number, error=type(exc).__name__, sqlstate=sqlstate(exc),
                     wait_s=round(state.next_action.sleep if state.next_action else 0.0, 3))

    return Retrying(retry=retry_if_exception(is_transient), stop=stop_after_attempt(attempts), reraise=True,
                    wait=wait_random_exponential(multiplier=WAIT_MULTIPLIER, max=max_wait), before_sleep=note,
                    sleep=sleep)


def call(ctx: EventSink | None, what: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` under the policy; retries are recorded as ``retry`` events of ``ctx``'s run.

    When the attempts run out on a transient error, raises :class:`TransientError` naming the unit,
    the attempts and the last error (SQLSTATE and first line of the server's message; no secrets:
    libpq never puts the password in a message)."""
    on_retry = (lambda **d: ctx.event("retry", **d)) if ctx is not None else None
    try:
        return retrying(on_retry, what=f"pg.{what}")(fn, *args, **kwargs)
    except Exception as exc:
        if is_transient(exc):
            raise TransientError(f"PostgreSQL {what} failed after {ATTEMPTS} attempts: {describe(exc)}") from None
        raise


def retry_pg(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator for ``fn(ctx, ...)`` units (checks, small steps): the whole call is retried."""

    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(ctx: Any, *args: Any, **kwargs: Any) -> T:
            return call(ctx, what, fn, ctx, *args, **kwargs)

        return wrapper

    return deco
