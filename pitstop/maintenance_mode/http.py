"""``strategy: http``: call the platform's admin endpoint to switch maintenance on and off.

Header values come from environment variables named in config (``headers[].value_env``); they are
never logged or put in exception messages. Calls to the same URL are made once per run even when
several target hosts share it. The dead-man's switch for this strategy is the endpoint's own expiry:
send ``{ttl_seconds}`` / ``{expires_at}`` in the ``on`` body (see docs/maintenance-mode.md).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ..errors import ConfigError, ConnectorError, TransientError
from .base import MaintenanceRecord, MaintenanceStatus, Strategy, substitute
from .state import MaintenanceState

if TYPE_CHECKING:
    from ..context import RunContext
    from .settings import HttpCall, HttpStrategyConfig

_lock = threading.Lock()


class HttpStrategy(Strategy):
    name = "http"

    @property
    def h(self) -> HttpStrategyConfig:
        if self.cfg.http is None:
            raise ConfigError("maintenance.strategy is http but maintenance.http is missing")
        return self.cfg.http

    def _headers(self) -> dict[str, str]:
        headers = {}
        for hd in self.h.headers:
            value = os.environ.get(hd.value_env)
            if not value:
                raise ConfigError(f"environment variable {hd.value_env} (header {hd.name}) is not set")
            headers[hd.name] = value
        return headers

    def _values(self, ctx: RunContext, host: str) -> dict[str, str]:
        address = ctx.cfg.hosts[host].address if host in ctx.cfg.hosts else None
        record = ctx.state.of(MaintenanceState).record
        if isinstance(record, MaintenanceRecord):
            return record.placeholders(host, address or host)
        return {"{host}": host, "{address}": address or host, "{run_id}": ctx.run_id}

    def call(self, ctx: RunContext, host: str, call: HttpCall, values: dict[str, str]) -> httpx.Response:
        url = substitute(call.url, values)
        body = substitute(call.json_body, values) if call.json_body is not None else None
        verify: Any = self.h.ca_file or self.h.verify_tls

        def once() -> httpx.Response:
            try:
                with httpx.Client(timeout=self.h.timeout, verify=verify) as client:
                    resp = client.request(call.method, url, json=body, headers=self._headers())
            except httpx.TransportError as exc:
                raise TransientError(f"{call.method} {url}: {type(exc).__name__}") from None
            if resp.status_code >= 500 and resp.status_code not in call.expect_status:
                raise TransientError(f"{call.method} {url}: HTTP {resp.status_code}")
            return resp

        retrying = Retrying(stop=stop_after_attempt(self.h.attempts), reraise=True,
                            wait=wait_random_exponential(multiplier=0.2, max=3),
                            retry=retry_if_exception_type(TransientError))
        resp = retrying(once)
        ctx.event("maintenance.http", host=host, method=call.method, url=url, status=resp.status_code)
        return resp

    def _switch(self, ctx: RunContext, host: str, turning_on: bool) -> bool:
        call = self.h.on if turning_on else self.h.off
        values = self._values(ctx, host)
        url = substitute(call.url, values)
        with _lock:  # one call per URL and direction per run, even with many target hosts
            done = ctx.state.of(MaintenanceState).http_done
            if done.get(url) is turning_on:
                return False
            was_on = self._status_on(ctx, host)
            resp = self.call(ctx, host, call, values)
            if resp.status_code not in call.expect_status:
                raise ConnectorError(f"{call.method} {url} answered HTTP {resp.status_code} "
                                     f"(expected {', '.join(map(str, call.expect_status))})")
            done[url] = turning_on
        return was_on is not turning_on

    def on(self, ctx: RunContext, host: str, record: MaintenanceRecord) -> bool:
        return self._switch(ctx, host, True)

    def off(self, ctx: RunContext, host: str) -> bool:
        return self._switch(ctx, host, False)

    def renew(self, ctx: RunContext, host: str, record: MaintenanceRecord) -> None:
        """The endpoint's own expiry is this strategy's dead-man: send ``on`` again with the new
        ``{ttl_seconds}``/``{expires_at}`` (once per URL and expiry). Without them in the call
        there is nothing to renew."""
        call = self.h.on
        if not any(p in call.model_dump_json() for p in ("{ttl_seconds}", "{expires_at}")):
            return
        values = record.placeholders(host)
        url = substitute(call.url, values)
        with _lock:
            renewed = ctx.state.of(MaintenanceState).http_renewed
            if renewed.get(url) == record.expires_at:
                return
            resp = self.call(ctx, host, call, values)
            if resp.status_code not in call.expect_status:
                raise ConnectorError(f"renewing: {call.method} {url} answered HTTP {resp.status_code}")
            renewed[url] = record.expires_at

    def _status_on(self, ctx: RunContext, host: str) -> bool | None:
        if self.h.status is None:
            return None
        resp = self.call(ctx, host, self.h.status, self._values(ctx, host))
        if self.h.status_json_field:
            try:
                return bool(resp.json().get(self.h.status_json_field))
            except (ValueError, AttributeError):
                raise ConnectorError(f"status answer of {self.h.status.url} is not a JSON object") from None
        return resp.status_code in self.h.status_on

    def status(self, ctx: RunContext, host: str) -> MaintenanceStatus:
        on = self._status_on(ctx, host)
        if on is None:
            return MaintenanceStatus(host=host, strategy=self.name, on=False, detail="no status call configured")
        return MaintenanceStatus(host=host, strategy=self.name, on=on,
                                 detail="endpoint says " + ("on" if on else "off"))

    def describe(self, ctx: RunContext, host: str, turning_on: bool) -> list[str]:
        call = self.h.on if turning_on else self.h.off
        return [f"{call.method} {substitute(call.url, self._values(ctx, host))}"]
