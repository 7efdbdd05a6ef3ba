"""The one place in pitstop that imports Prefect (besides the thin entry files in ``flows/``): this package.

It holds the flows (``pitstop-maintenance``, ``pitstop-notices``; ``flows/*.py`` re-export them as the
deployments' entry points, loaded by path), progress in the flow run's log (``progress``), the approval
gate's pause and resume (``approval``), the unit runner that makes one stage unit one Prefect task,
and every other call pitstop makes to Prefect: artifacts, the Secret block, the flow run id; ``deployments``
creates, finds and triggers deployments.

It sits on top: it imports the runner, notify, report and deploy, and nothing in pitstop below it imports it
(``tests/unit/test_import_graph.py``). What the engine needs from Prefect is handed in: the unit runner, the
approval waiter, the flow run (its id, and ``publish`` for the report's artifacts) and the Secret block reader
(``read_secret``). Only the CLI modules import it, inside the functions that need Prefect (pitstop.cli_prefect),
so ``--engine local`` never imports Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client

from ..errors import InputError, RunLocked
from .progress import flow_run_log, flow_run_name

if TYPE_CHECKING:
    from ..context import FlowRunRef

T = TypeVar("T")


# -- the engine's unit runner ---------------------------------------------------------------------------
def prefect_unit(name: str, fn: Callable[[], T]) -> T:
    """Run one stage unit as a Prefect task (never one task per command: tasks cost 10-90 ms)."""
    wrapped = task(name=name, cache_policy=NO_CACHE, persist_result=False, retries=0)(fn)
    return wrapped()


# -- what every flow entry point does first -------------------------------------------------------------
def deployment_defaults() -> dict[str, Any] | None:
    """The parameters the running deployment was *created* with, read from the Prefect API; ``None`` when
    this flow runs in-process (``pitstop run --engine prefect``). ``prefect.runtime.deployment.parameters``
    is no use here: it returns the flow run's own parameters, i.e. whatever the caller chose."""
    from prefect.runtime import deployment

    dep_id = deployment.id
    if not dep_id:
        return None
    try:
        with get_client(sync_client=True) as client:
            return dict(client.read_deployment(UUID(str(dep_id))).parameters or {})
    except Exception as exc:  # noqa: BLE001 - fail closed: parameters we cannot check are refused
        raise InputError(f"cannot read deployment {dep_id} from the Prefect API to check this flow run's "
                         f"parameters ({type(exc).__name__}); nothing was run") from None


def announce_files(env: str, runbook: str | None = None) -> None:
    """The flow run's first log lines name the config and runbook files it loads (absolute paths), at INFO
    whatever ``PREFECT_LOGGING_LEVEL`` says (a worker whose environment quiets Prefect to WARNING, as the
    ``pitstop`` command does for itself)."""
    log = flow_run_log()
    logger = log.logger if log is not None else _logger()
    logger.info("config: %s", env)
    if runbook:
        logger.info("runbook: %s", runbook)


def refused(exc: Exception) -> Any:
    """The final state of a flow run refused by the environment lock (``pitstop run``'s exit code 3): type
    ``CANCELLED``, named ``Refused``, its message naming the run that holds the environment. Not ``Failed``
    (nothing failed; the environment's maintenance is running) and not ``Crashed``; no run folder, report
    or notification exists for it."""
    from prefect.states import Cancelled

    from ..deploy import REFUSED, REFUSED_PREFIX

    log = flow_run_log()  # the flow run's log (the UI); in-process the CLI's own error line says it on the console
    (log.logger if log is not None else _logger()).warning("refused: %s", exc)
    return Cancelled(name=REFUSED, message=f"{REFUSED_PREFIX}{exc}")


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:  # the flow function called directly (tests)
        return logging.getLogger("pitstop.flows")


def current_flow_run() -> FlowRunRef:
    """The flow run this process is in and its deployment, from Prefect's runtime (empty outside one)."""
    from prefect.runtime import deployment as dep
    from prefect.runtime import flow_run as current

    from ..context import FlowRunRef

    try:
        fid = str(current.id) if current.id else None
        deployment = (f"{dep.name} ({dep.id})" if dep.name else str(dep.id)) if dep.id else None
    except Exception:  # noqa: BLE001 - the API may be unreachable: the flow run id is enough
        return FlowRunRef(id=str(current.id) if current.id else None, publish=publish_artifacts)
    return FlowRunRef(id=fid, deployment=deployment, publish=publish_artifacts)


def _flow_run_id(env: str, runbook: str) -> str | None:
    from prefect.runtime import flow_run

    from ..runner import run_id_for_flow_run

    fid, start = flow_run.id, flow_run.scheduled_start_time
    if not fid or start is None:
        return None
    return run_id_for_flow_run(env, runbook, str(fid), start)


# -- the flows --------------------------------------------------------------------------------------------
@flow(name="pitstop-maintenance", persist_result=False, log_prints=False, validate_parameters=True,
      flow_run_name=flow_run_name)
def maintenance(env: str, runbook: str, trigger: str = "manual", reason: str = "",
                accept_unverified_backup: bool = False, run_id: str | None = None, wait_s: float = 0.0,
                override_blackout: bool = False, expected_downtime: str | None = None, rehearsal: bool = False,
                console: bool = False) -> dict[str, Any]:
    """Run ``runbook`` on environment ``env``; ``console`` prints live progress to this process.

    Another run holding the environment's lock: a deployment's flow run (worker) ends ``Cancelled`` named
    ``Refused`` (see :func:`refused`), not ``Failed`` or ``Crashed``, in-process too; the CLI's in-process call
    (:func:`~pitstop.prefect_adapter.inprocess.run_in_process`) raises :class:`RunLocked` from it (exit code 3).

    Without a ``run_id`` the id derives from the Prefect flow run, so when Prefect retries or
    reschedules this flow run after a crash, the retry finds the run folder and *resumes* it.
    """
    from .. import runner
    from ..console import ConsoleView
    from ..fsmodes import private_umask
    from ..input_guards import flow_parameters

    # the same guards as the CLI, before anything is read or written: a Prefect UI or API user is not
    # trusted with paths, run ids or overrides without a reason
    deployed = deployment_defaults()
    files = flow_parameters(env=env, runbook=runbook, run_id=run_id, reason=reason,
                            accept_unverified_backup=accept_unverified_backup,
                            deployment_parameters=deployed, trigger=trigger,
                            override_blackout=override_blackout, expected_downtime=expected_downtime, wait_s=wait_s)
    announce_files(files.env, files.runbook)
    from .approval import prefect_waiter

    # progress to this process's console (pitstop run) and, always, to the flow run's log (the Prefect UI)
    listeners: list[runner.Listener] = [x for x in (ConsoleView() if console else None, flow_run_log()) if x]
    run_id = run_id or _flow_run_id(env, runbook)
    try:
        with private_umask():
            result = runner.execute(files.env, files.runbook, trigger=trigger, reason=reason,
                                    accept_unverified_backup=accept_unverified_backup, run_id=run_id,
                                    unit_runner=prefect_unit, listener=listeners, wait_s=wait_s,
                                    approval_waiter=prefect_waiter(),
                                    override_blackout=override_blackout, expected_downtime=expected_downtime,
                                    rehearsal=rehearsal, flow_run=current_flow_run(), read_secret=secret_block)
    except RunLocked as exc:  # another run holds the environment: nothing of this run exists, nothing was sent
        return refused(exc)  # the flow run's final state; in-process (inprocess.py) it becomes RunLocked again
    return {"run_id": result.run_id, "status": result.status.value, "run_dir": str(result.run_dir)}


@flow(name="pitstop-notices", persist_result=False, log_prints=False, validate_parameters=True)
def notices(env: str, now: str | None = None) -> dict[str, Any]:
    """Send the notices of ``env`` due now. ``now`` (ISO time) is a rehearsal: what would be sent then is
    returned, nothing is sent or recorded (a pretended time never becomes a send time)."""
    from ..config import load_config
    from ..fsmodes import private_umask
    from ..input_guards import flow_env
    from ..notify import notices as notices_mod
    from ..notify.channels import build_channels

    path = flow_env(env, deployment_defaults())  # a name, or the deployment's own path: never any YAML file
    announce_files(path)
    cfg = load_config(path)
    when = notices_mod.parse_now(now)
    channels = build_channels(cfg, secret_block)
    with private_umask():
        if now is not None:
            results = notices_mod.preview_due(cfg, when, channels)
        else:
            results = notices_mod.send_due(cfg, clock=notices_mod.system_clock, channels=channels)
    return {"environment": cfg.name, "rehearsal": now is not None, "sent": sum(r.status == "sent" for r in results),
            "failed": sum(r.status == "failed" for r in results),
            "results": [r.model_dump(mode="json") for r in results]}


def serve_notices(argv: list[str]) -> None:
    """``python flows/notices.py ENV``: serve the notices flow locally, hourly."""
    notices.serve(name="notices", cron="0 * * * *", parameters={"env": argv[1] if len(argv) > 1 else "demo"})


# -- artifacts ----------------------------------------------------------------------------------------------
def in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx is not None and ctx.flow_run is not None


def create_artifacts(markdown: str, md_key: str, table: list[dict[str, Any]], table_key: str,
                     description: str) -> dict[str, str]:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    md_id = create_markdown_artifact(markdown=markdown, key=md_key, description=description)
    table_id = create_table_artifact(table=table, key=table_key, description=description)
    return {"markdown": str(md_id), "table": str(table_id)}


def publish_artifacts(markdown: str, md_key: str, table: list[dict[str, Any]], table_key: str,
                      description: str) -> dict[str, str] | None:
    """The report's artifacts on the flow run this process is in (the runner's ``FlowRunRef.publish``); None
    outside one (the flow function called directly)."""
    if not in_flow_run():
        return None
    return create_artifacts(markdown, md_key, table, table_key, description)


def markdown_artifacts(prefix: str, run_name: str) -> list[Any]:
    """The markdown artifacts whose key starts with ``prefix`` and whose description names ``(run_name)``."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, ArtifactFilterType
    from prefect.client.schemas.sorting import ArtifactSort

    mine: list[Any] = []
    with get_client(sync_client=True) as client:
        for offset in range(0, 5000, 200):
            page = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=prefix),
                                               type=ArtifactFilterType(any_=["markdown"])),
                sort=ArtifactSort.CREATED_DESC, limit=200, offset=offset)
            found = [a for a in page if f"({run_name})" in (a.description or "")]
            mine += found
            if len(page) < 200 or (mine and not found):  # newest first: past this run's artifacts
                break
    return mine


# -- secrets ------------------------------------------------------------------------------------------------
def secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())  # type: ignore[union-attr]


# wherever the flow is imported (a worker, the CLI)
def _plain_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The flow run's parameters as stored by the API: they are JSON scalars already (names, flags, a number),
    validated by the flow's signature. Prefect's default serializer imports FastAPI for its
    ``jsonable_encoder`` (about a second of a command's start-up on this machine) to do the same."""
    return {k: v if v is None or isinstance(v, str | bool | int | float) else str(v) for k, v in parameters.items()}


maintenance.serialize_parameters = _plain_parameters  # type: ignore[method-assign]
