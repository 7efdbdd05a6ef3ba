"""`make reliability`: run the whole reliability suite (every kill point, payload and fault) and
print one line of figures summed from what the tests actually injected and checked.

    .venv/bin/python tests/reliability/run_suite.py [--fast] [pytest args...]

``transient_faults``/``recovered`` sum every fault test's records: test_transient (SSH/S3 resets, 503s,
SMTP 451s, lock waits), test_pg_disconnect (``pg_terminate_backend`` inside checks, backup, purge) and
test_restarts (sshd killed and restarted, S3 outage mid-upload).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.reliability.results import FIELDS  # noqa: E402

# the reliability package, and the security tests elsewhere whose figures belong on its line
SUITE = ["reliability", "security", "security_data", "cleanup/test_partition_shapes.py", "runs/test_resume_guards.py",
         "backup/test_restore_safety.py"]


def main(argv: list[str]) -> int:
    fast = "--fast" in argv
    extra = [a for a in argv if a != "--fast"]
    with tempfile.TemporaryDirectory(prefix="pitstop-reliability-") as tmp:
        out = Path(tmp) / "results.jsonl"
        temproot = Path(tmp) / "pytest"
        temproot.mkdir()
        env = {**os.environ, "PITSTOP_RELIABILITY_OUT": str(out), "PYTEST_DEBUG_TEMPROOT": str(temproot),
               "PITSTOP_RELIABILITY_FULL": "0" if fast else "1"}
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              *(str(ROOT / "tests" / p) for p in SUITE), *extra], env=env, cwd=ROOT)
        totals = dict.fromkeys(FIELDS, 0)
        if out.exists():
            for line in out.read_text().splitlines():
                for k, v in json.loads(line).items():
                    if k in totals:
                        totals[k] += int(v)
    if rc != 0:
        print(f"pytest exited {rc}: some checks failed (figures below count what ran)", file=sys.stderr)
    print(" ".join(f"{k}={totals[k]}" for k in FIELDS))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
