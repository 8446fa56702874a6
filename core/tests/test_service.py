"""The ASGI app's health endpoints."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tidings.config import parse_config
from tidings.plugins import load_plugins
from tidings.runtime import Runtime
from tidings.service import create_app

pytestmark = pytest.mark.anyio


async def test_readyz_needs_the_current_schema(database_url: str, tmp_path: Path) -> None:
    config = parse_config({"database_url": database_url}, {}, tmp_path / "tidings.toml")
    runtime = Runtime.start(config, plugins=load_plugins({}, entry_points_enabled=False))
    app = create_app(runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        before = await client.get("/readyz")
        assert before.status_code == 503
        assert before.json()["hint"] == "run `tidings db upgrade`"
        await runtime.store.upgrade()
        after = await client.get("/readyz")
        assert after.status_code == 200
    await runtime.close()
