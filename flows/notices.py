"""The ``notices`` flow: send every advance notice that is due, exactly once. Deploy it hourly::

    prefect deploy flows/notices.py:notices -n notices --cron "0 * * * *" --param env=production

or ``python -m flows.notices ENV`` to serve it locally on that schedule. Overlapping or repeated
runs are safe: the ledger lets one sender per notice win (pitstop.notify.ledger). The only
parameter is the environment name; channel URLs are read where the flow runs, never passed in.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from pitstop.config import load_config
from pitstop.notify import notices as notices_mod


@flow(name="pitstop-notices", persist_result=False, log_prints=False, validate_parameters=True)
def notices(env: str, now: str | None = None) -> dict[str, Any]:
    """Send the notices of ``env`` due now. ``now`` (ISO time) is a rehearsal: what would be sent then is
    returned, nothing is sent or recorded (a pretended time never becomes a send time)."""
    from flows.common import announce_files, deployment_defaults
    from pitstop.cli_notices import parse_now
    from pitstop.fsmodes import private_umask
    from pitstop.input_guards import flow_env

    path = flow_env(env, deployment_defaults())  # a name, or the deployment's own path: never any YAML file
    announce_files(path)
    cfg = load_config(path)
    when = parse_now(now)
    with private_umask():
        if now is not None:
            results = notices_mod.preview_due(cfg, when)
        else:
            results = notices_mod.send_due(cfg, clock=notices_mod.system_clock)
    return {"environment": cfg.name, "rehearsal": now is not None, "sent": sum(r.status == "sent" for r in results),
            "failed": sum(r.status == "failed" for r in results),
            "results": [r.model_dump(mode="json") for r in results]}


if __name__ == "__main__":
    notices.serve(name="notices", cron="0 * * * *", parameters={"env": sys.argv[1] if len(sys.argv) > 1 else "demo"})
