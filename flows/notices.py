"""Entry point of the ``notices`` flow: send every advance notice that is due, exactly once. Deploy it hourly::

    prefect deploy flows/notices.py:notices -n notices --cron "0 * * * *" --param env=production

or ``python flows/notices.py ENV`` to serve it locally on that schedule. Overlapping or repeated
runs are safe: the ledger lets one sender per notice win (pitstop.notify.ledger). The only
parameter is the environment name; channel URLs are read where the flow runs, never passed in.
The flow itself lives in :mod:`pitstop.prefect_adapter`.
"""

import sys

from pitstop.prefect_adapter import notices, serve_notices

__all__ = ["notices"]

if __name__ == "__main__":
    serve_notices(sys.argv)
