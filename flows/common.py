"""What every flow entry point does before anything else: read the deployment's own parameters (to
check the flow run's against them) and name the files it loads in the flow run's first log lines."""

from __future__ import annotations

import logging
from typing import Any


def deployment_defaults() -> dict[str, Any] | None:
    """The parameters the running deployment was *created* with, read from the Prefect API; ``None`` when
    this flow runs in-process (``pitstop run --engine prefect``). ``prefect.runtime.deployment.parameters``
    is no use here: it returns the flow run's own parameters, i.e. whatever the caller chose."""
    from prefect.runtime import deployment

    dep_id = deployment.id
    if not dep_id:
        return None
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from pitstop.errors import InputError

    try:
        with get_client(sync_client=True) as client:
            return dict(client.read_deployment(UUID(str(dep_id))).parameters or {})
    except Exception as exc:  # noqa: BLE001 - fail closed: parameters we cannot check are refused
        raise InputError(f"cannot read deployment {dep_id} from the Prefect API to check this flow run's "
                         f"parameters ({type(exc).__name__}); nothing was run") from None


def announce_files(env: str, runbook: str | None = None) -> None:
    """The flow run's first log lines name the config and runbook files it loads (absolute paths)."""
    logger = _logger()
    logger.info("config: %s", env)
    if runbook:
        logger.info("runbook: %s", runbook)


def refused(exc: Exception) -> Any:
    """The final state of a flow run refused by the environment lock (``pitstop run``'s exit code 3): type
    ``CANCELLED``, named ``Refused``, its message naming the run that holds the environment. Not ``Failed``
    (nothing failed; the environment's maintenance is running) and not ``Crashed``; no run folder, report
    or notification exists for it."""
    from prefect.states import Cancelled

    from pitstop.deploy import REFUSED

    _logger().warning("refused: %s", exc)
    return Cancelled(name=REFUSED, message=f"refused: {exc}")


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:  # the flow function called directly (tests)
        return logging.getLogger("pitstop.flows")
