"""The CLI's flow run in its own process (``pitstop run --engine prefect``): parameters serialized without
FastAPI, Prefect's console errors without tracebacks, no heartbeats against the local API server."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from prefect.exceptions import CancelledRun

from ..deploy import REFUSED_PREFIX
from ..errors import RunLocked
from . import maintenance


def run_in_process(local_server: bool, **parameters: Any) -> dict[str, Any]:
    """The CLI's flow run in this process. Prefect's console log shows an error's message without its
    traceback (the flow run's log on the API keeps it; ``PITSTOP_DEBUG=1`` shows it here too): a run refused
    because the environment is busy printed thirty lines of Prefect's engine before pitstop's own one.

    Against the state directory's local API server (``local_server``), without flow-run heartbeats: they let
    a server's automations mark a dead run Crashed, which the local server does not run, and stopping their
    thread costs up to a second at the end of every run."""
    with contextlib.ExitStack() as stack:
        if os.environ.get("PITSTOP_DEBUG") != "1":
            stack.enter_context(_console_without_tracebacks())
        if local_server:
            from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

            stack.enter_context(temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        try:
            return maintenance(**parameters)
        except CancelledRun as exc:  # ended Refused (pitstop.prefect_adapter.refused): exit 3; else as it came
            if not str(exc).startswith(REFUSED_PREFIX):
                raise
            raise RunLocked(str(exc).removeprefix(REFUSED_PREFIX)) from None


class _NoTraceback(logging.Formatter):
    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:  # the record goes on to the API handler as it came
            record.exc_info, record.exc_text, record.stack_info = saved


@contextlib.contextmanager
def _console_without_tracebacks() -> Iterator[None]:
    handlers = [h for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler"]
    saved = [h.formatter for h in handlers]
    for h in handlers:
        h.setFormatter(_NoTraceback(h.formatter))
    try:
        yield
    finally:
        for h, f in zip(handlers, saved, strict=True):
            h.setFormatter(f)
