"""Run ids given as input (CLI arguments, flow parameters): one strict shape, never a path.

A run id names a folder under the environment's reports directory and a prefix in storage, so an id
like ``../../outside`` or ``/etc`` must never get that far: :func:`check_run_id` refuses it as bad
input (exit 2) before anything is read or written.
"""

from __future__ import annotations

import re

from .errors import InputError

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,159}")


def check_run_id(run_id: str, what: str = "run id") -> str:
    if not RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise InputError(f"{what} {run_id!r} is not a run id (letters, digits, '.', '_' and '-', as "
                         "`pitstop report list` prints them; never a path)")
    return run_id
