"""pitstop: maintenance orchestrator and runbook engine on Prefect 3."""

__version__ = "0.1.0"
