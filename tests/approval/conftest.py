"""A real Prefect server (PostgreSQL 15 backed, UI on) for the approval tests on the Prefect engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import prefect_server_on_postgres
from tests.prefect.test_server_worker import PREFECT, system_pg  # noqa: F401 - fixture re-used


@pytest.fixture(scope="module")
def prefect_ui_server(system_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:  # noqa: F811
    """``prefect server start`` on loopback with its UI, on a throw-away PostgreSQL database; the environment
    a CLI subprocess needs to reach it (PREFECT_API_URL ...)."""
    with prefect_server_on_postgres(system_pg, tmp_path_factory.mktemp("prefect-ui-home"), ui=True) as info:
        yield info
