"""The ``pitstop`` console script: the command's own process settings first (pitstop/process_defaults.py),
then the CLI. Importing :mod:`pitstop.cli` in another process (a test, a Python caller, a worker) sets nothing."""

from __future__ import annotations


def main() -> None:
    from .process_defaults import cli_process_defaults

    cli_process_defaults()
    from .cli import main as cli_main

    cli_main()
