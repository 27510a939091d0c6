"""Reading the jobs' PostgreSQL tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import settings


def query(config: Mapping[str, Any], sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(settings.postgres_url(config), connect_timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for_rows(config: Mapping[str, Any], sql: str, params: tuple,
                  until: Callable[[list[tuple]], bool], timeout_s: float = 120.0
                  ) -> list[tuple]:
    """Poll a query until `until(rows)` holds or the timeout passes; returns the last rows."""
    deadline = time.monotonic() + timeout_s
    rows = query(config, sql, params)
    while not until(rows) and time.monotonic() < deadline:
        time.sleep(1)
        rows = query(config, sql, params)
    return rows
