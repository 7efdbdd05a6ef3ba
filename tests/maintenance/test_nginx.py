"""A real nginx on loopback serves the maintenance page (503 + Retry-After) while the flag file
exists and the site (200) after: the flag_file strategy end to end, with the documented snippet."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pitstop.maintenance_mode.steps import OffParams, OnParams, maintenance_off_host, maintenance_on
from tests.conftest import free_port

from .helpers import make_ctx, root_of, wait_for, write_env

pytestmark = [pytest.mark.root, pytest.mark.services("nginx")]

NGINX = "/usr/sbin/nginx"
# The server block documented in docs/maintenance-mode.md, with this test's paths substituted.
SITE = """
    server {
        listen 127.0.0.1:@PORT@;
        root @WWW@/html;
        error_page 503 @maintenance;
        location = /healthz { return 200 "ok\\n"; }
        location / {
            if (-f @WWW@/maintenance.flag) { return 503; }
            try_files $uri $uri/ =404;
        }
        location @maintenance {
            root @WWW@/maintenance;
            rewrite ^ /index.html break;
            add_header Retry-After 600 always;
            add_header Cache-Control "no-store" always;
        }
    }
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """nginx (Debian package) as root with a generated config; yields the env and the site URL."""
    env = write_env(tmp_path, hosts={"web-1": {"transport": "local", "root": "hosts/web-1"}})
    www = root_of(env, "web-1") / "var" / "www"
    (www / "html").mkdir(parents=True)
    (www / "maintenance").mkdir()
    (www / "html" / "index.html").write_text("<h1>shop</h1>\n")
    (www / "maintenance" / "index.html").write_text("<h1>Back soon: scheduled maintenance</h1>\n")
    port = free_port()
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
    default_type text/html;
{SITE.replace("@PORT@", str(port)).replace("@WWW@", str(www))}
}}
""")
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "nginx exited"
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, deadline_s=30, what="nginx to listen")
    yield env, url
    proc.terminate()
    proc.wait(timeout=30)


def test_nginx_serves_503_with_retry_after_while_flag_exists(nginx: tuple[Path, str]) -> None:
    env, url = nginx
    assert httpx.get(url + "/").status_code == 200
    ctx = make_ctx(env)
    maintenance_on(ctx, OnParams(), "web-1")
    r = httpx.get(url + "/checkout")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "600" and "scheduled maintenance" in r.text
    assert httpx.get(url + "/healthz").status_code == 200  # health probes bypass the page
    maintenance_off_host(ctx, OffParams(), "web-1")
    r = httpx.get(url + "/")
    assert r.status_code == 200 and "shop" in r.text and "Retry-After" not in r.headers
