"""The pitstop side of bench_fleet.py: load a pitstop config, fan out over its hosts with the
fleet layer (pitstop.fleet.fanout + the paramiko SshConnection) and do the tuning work on each host:
upload a 1 KB sysctl-style file (a ``Put``: atomic, temporary name + rename) and run two commands, as
one batch (``Connection.run_batch``: one SSH session per host, as the steps use it for upload + run
and multi-command work). Everything here is pitstop's own path; the process does nothing a real
fleet stage would not.

usage: fleet_client.py CONFIG.yaml PAYLOAD_FILE
Prints one JSON line: {"ok": n, "failed": n, "errors": [...]}.
"""

from __future__ import annotations

import json
import sys
import time

from pitstop.config import load_config
from pitstop.connectors import connect_host
from pitstop.connectors.base import Cmd, Put
from pitstop.fleet.fanout import fan_out
from pitstop.model import HostResult, Status


def main() -> None:
    cfg = load_config(sys.argv[1])
    payload = open(sys.argv[2], "rb").read()  # noqa: SIM115 - tiny file

    def work(name: str) -> HostResult:
        t0 = time.monotonic()
        target = f"{cfg.hosts[name].vars['bench_dir']}/99-bench.conf"
        try:
            with connect_host(cfg, name) as conn:
                conn.run_batch([Put(target, payload), Cmd(["sha256sum", target]), Cmd(["uname", "-a"])])
            return HostResult(host=name, status=Status.SUCCEEDED, duration_s=time.monotonic() - t0)
        except Exception as exc:  # noqa: BLE001 - counted
            return HostResult(host=name, status=Status.FAILED, error=str(exc))

    res = fan_out(list(cfg.hosts), work, cfg.fleet)
    print(json.dumps({"ok": len(res.results) - len(res.failed), "failed": len(res.failed),
                      "errors": [r.error for r in res.failed][:3]}))


if __name__ == "__main__":
    main()
