"""Entry point of the maintenance flow for Prefect deployments (``flows/maintenance.py:maintenance``).

Prefect loads this file by path; the flow itself lives in :mod:`pitstop.prefect_adapter` (one flow run
per maintenance run, one Prefect task per stage unit). Parameters are names and flags only: secrets
never travel as flow parameters.
"""

from pitstop.prefect_adapter import maintenance, prefect_unit

__all__ = ["maintenance", "prefect_unit"]
