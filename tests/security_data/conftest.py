"""Real peers for the data-security tests: the notification suite's aiosmtpd (STARTTLS + AUTH) and HTTP
receiver, and moto's S3 server from the backup suite."""

from __future__ import annotations

from tests.backup.conftest import moto_endpoint  # noqa: F401 - re-exported fixture
from tests.notify.conftest import http_receiver, notices_env, smtp_server  # noqa: F401 - re-exported
