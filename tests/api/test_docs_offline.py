"""/docs and /redoc work on a machine without internet: every asset comes from the API itself.

Used to go wrong: FastAPI's default pages load Swagger UI from cdn.jsdelivr.net, so on a closed
network /docs was a blank page.
"""
from __future__ import annotations

import re

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import app
from tests.api.uvicorn_server import api_server

ASSET_REF = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


def _references(html: str) -> list[str]:
    return [a or b for a, b in ASSET_REF.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_local_assets_and_each_answers_200(page):
    with TestClient(app) as client:
        r = client.get(page)
        assert r.status_code == 200
        assert "http://" not in r.text and "https://" not in r.text, "an external URL on the page"
        refs = _references(r.text)
        assert "/openapi.json" in r.text
        assets = [ref for ref in refs if ref.startswith("/static/")]
        assert assets, refs
        for ref in assets:
            asset = client.get(ref)
            assert asset.status_code == 200, ref
            assert len(asset.content) > 1000, ref


def test_only_the_shipped_assets_are_served():
    with TestClient(app) as client:
        assert client.get("/static/docs/swagger-ui.css").headers["content-type"].startswith("text/css")
        r = client.get("/static/docs/__init__.py")
        assert r.status_code == 404
        assert r.json()["detail"][0]["loc"] == ["path", "name"]
        assert client.get("/static/docs/..%2F__init__.py").status_code == 404


def test_docs_are_not_part_of_the_api_schema():
    with TestClient(app) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc", "/static"))]


def test_swagger_ui_renders_the_operations_in_a_browser_with_the_internet_cut_off(sqlite_url, tmp_path, page):
    """Debian's Chromium (the `page` fixture: one Playwright at a time in a process) with every request
    that leaves the API refused."""
    external: list[str] = []
    with api_server({"VOZVRAT_DATABASE_URL": sqlite_url}, tmp_path / "api.log") as base:
        assert httpx.get(base + "/docs").status_code == 200

        def only_local(route):
            if route.request.url.startswith(base):
                return route.continue_()
            external.append(route.request.url)
            return route.abort()

        page.set_viewport_size({"width": 1280, "height": 900})
        page.route("**/*", only_local)
        page.goto(base + "/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        operations = page.locator(".opblock-summary-path").all_inner_texts()
    assert external == []
    assert any("/claims" in op for op in operations), operations
