"""Real peers for the data-security tests: the notification suite's aiosmtpd (STARTTLS + AUTH) and HTTP
receiver, and moto's S3 server from the backup suite."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "backup") not in sys.path:  # the backup suite's conftest imports its helpers by name
    sys.path.insert(0, str(HERE.parent / "backup"))

from tests.backup.conftest import moto_endpoint  # noqa: E402,F401 - re-exported fixture
from tests.notify.conftest import http_receiver, notices_env, smtp_server  # noqa: E402,F401 - re-exported
