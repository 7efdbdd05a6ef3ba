"""pitstop: maintenance orchestrator and runbook engine on Prefect 3.

Importing pitstop changes no process-wide state; the ``pitstop`` command sets its process defaults in
:mod:`pitstop.process_defaults`."""

__version__ = "0.1.0"
