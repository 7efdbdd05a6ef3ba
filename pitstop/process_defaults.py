"""Process start-up settings of the ``pitstop`` command, applied by its entry point (:mod:`pitstop.cli`) and
nowhere else: importing pitstop as a library (a Prefect worker running other people's flows, a test, a
script) changes no process-wide state.

- ``PYDANTIC_DISABLE_PLUGINS``: pydantic looks for plugins by scanning the metadata of every installed
  distribution the first time a model is built (tens of ms with Prefect's dependency tree, paid by every
  CLI call). pitstop uses none; an operator who wants one sets the variable himself (it is only defaulted).
- Quiet, private defaults for Prefect before it is imported: no analytics, no chatter.
- A deferred ``invoke``: ``paramiko.config`` imports invoke (~90 ms of CPU) only to run ``Match exec``
  lines of an OpenSSH config; a stand-in imports the real module on first attribute use.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
from typing import Any

CLI_ENVIRONMENT = {"PYDANTIC_DISABLE_PLUGINS": "__all__", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
                   "PREFECT_LOGGING_LOG_PRINTS": "false"}


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is used; then imports the
    real module (which replaces it in ``sys.modules``) and forwards to it."""

    _lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:
        with self._lock:
            real = self.__dict__.get("_real_module")
            if real is None:
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                real = self.__dict__["_real_module"] = importlib.import_module(self.__name__)
        return getattr(real, attr)


def defer_invoke() -> None:
    """Make ``import invoke`` cheap before paramiko is imported.

    ``paramiko.config`` imports invoke (and with it asyncio, unittest.mock, a vendored YAML ...,
    ~90 ms of CPU here) only to run ``Match exec`` lines of an OpenSSH config. A stand-in module
    imports the real one on first attribute use, so ``Match exec`` still works and every other
    process start skips the cost.
    """
    if "invoke" in sys.modules or "paramiko" in sys.modules or importlib.util.find_spec("invoke") is None:
        return
    sys.modules["invoke"] = _Deferred("invoke")



def cli_process_defaults() -> None:
    """What the ``pitstop`` command sets for its own process before importing anything heavy."""
    for key, value in CLI_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    defer_invoke()
