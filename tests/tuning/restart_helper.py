"""Stand-in for a service manager in tests: records start/end of a restart in a shared journal and
marks the service healthy (or not, on the host named by the third argument)."""

import sys
import time
from pathlib import Path

service, journal, fail_host = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
host = Path.cwd().name  # the sandbox directory of the host
with journal.open("a") as f:
    f.write(f"start {host}\n")
time.sleep(0.2)  # a restart takes a moment: overlapping hosts would interleave in the journal
Path("restart-needed").unlink(missing_ok=True)
if host != fail_host:
    Path(f"healthy-{service}").write_text("ok")
with journal.open("a") as f:
    f.write(f"end {host}\n")
