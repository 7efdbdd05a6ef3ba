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
    """Send the notices of ``env`` due now (``now``: ISO time, for rehearsals)."""
    from pitstop.cli_notices import parse_now
    from pitstop.fsmodes import private_umask

    cfg = load_config(env)
    when = parse_now(now)
    with private_umask():
        results = notices_mod.send_due(cfg, when, clock=notices_mod.system_clock)
    return {"environment": cfg.name, "sent": sum(r.status == "sent" for r in results),
            "failed": sum(r.status == "failed" for r in results),
            "results": [r.model_dump(mode="json") for r in results]}


if __name__ == "__main__":
    notices.serve(name="notices", cron="0 * * * *", parameters={"env": sys.argv[1] if len(sys.argv) > 1 else "demo"})
