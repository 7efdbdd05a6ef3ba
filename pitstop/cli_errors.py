"""One line, never a traceback: what went wrong with which service, its address, and what to check.

The CLI's last resort for exceptions that are not pitstop's own (an S3 endpoint down, a database that
refuses, an SMTP server away, a host that does not answer): each is named by the service it belongs to.
``PITSTOP_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations

import os
import traceback


def _first(text: object) -> str:
    lines = str(text).strip().splitlines()
    return lines[0][:300] if lines else ""


def describe(exc: BaseException) -> str:
    """A one-line description of ``exc`` naming the service, its address and what to check."""
    mod = type(exc).__module__
    name = type(exc).__name__
    if mod.startswith(("botocore", "boto3", "s3transfer")):
        endpoint = getattr(exc, "kwargs", {}).get("endpoint_url") if hasattr(exc, "kwargs") else None
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
            return (f"cannot reach the S3 endpoint {endpoint or ''}: check storage.endpoint_url, the network and "
                    f"that the service is up ({_first(exc)})")
        if name == "NoCredentialsError":
            return "S3: no credentials (set the variables named by storage.access_key_env / secret_key_env)"
        return f"S3 refused the request: {_first(exc)} (check the bucket, its policy and the credentials)"
    if mod.startswith("psycopg"):
        return f"PostgreSQL: {_first(exc)} (check database.host/port/user, the server and pg_hba.conf)"
    if mod.startswith("smtplib") or name.startswith("SMTP"):
        return f"SMTP: {_first(exc)} (check the mail channel's URL, the server and its port)"
    if mod.startswith("paramiko"):
        return f"SSH: {_first(exc)} (check the host's address, port, user and pinned key: pitstop hosts check)"
    if mod.startswith("prefect") and name == "PrefectHTTPStatusError":
        code = getattr(getattr(exc, "response", None), "status_code", None)
        url = str(getattr(getattr(exc, "request", None), "url", "")).split("?")[0]
        if code in (401, 403):
            return (f"the Prefect API refused the request ({code}, {url}): set PREFECT_API_AUTH_STRING to the "
                    "server's user:password (docs/prefect.md, Protecting the server)")
        return f"the Prefect API answered {code} ({url}): check PREFECT_API_URL and the server's log"
    if mod.startswith(("httpx", "httpcore", "urllib3", "requests")):
        return f"HTTP: {_first(exc)} (check the URL and that the service is up)"
    if "ephemeral Prefect API server" in str(exc):
        return (f"Prefect: {_first(exc)} (the local API server did not start in time: a busy machine? Run again, set "
                "PREFECT_API_URL to a running Prefect server, or use --engine local; nothing was run)")
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return f"{name}{where}: {exc.strerror or _first(exc)}"
    return f"unexpected {name}: {_first(exc)} (PITSTOP_DEBUG=1 shows the traceback; please report it)"


def hosts_failed(failures: list[tuple[str, str]], doing: str) -> str:
    """One line for the hosts a command could not reach: how many, the first one's error (naming the service,
    the address and what to check) and the names of the others."""
    (host, error), rest = failures[0], [h for h, _ in failures[1:]]
    error = error if error.startswith(f"{host}:") else f"{host}: {error}"
    others = f" (also: {', '.join(rest)})" if rest else ""
    return f"{len(failures)} host(s) could not be {doing}: {_first(error)}{others}"


def debug_traceback(exc: BaseException) -> str | None:
    if os.environ.get("PITSTOP_DEBUG") == "1":
        return "".join(traceback.format_exception(exc))
    return None
