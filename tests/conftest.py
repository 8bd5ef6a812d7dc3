"""Shared fixtures: databases on SQLite and PostgreSQL, each test with its own, dropped afterwards.

PostgreSQL listens on 127.0.0.1:5432 (user postgres, trust auth) on the development and CI machines.
An unreachable server fails the run, saying why: the development and CI machines have it, so nothing is skipped.
"""
from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import text

from models.db import make_engine
from models.migrate import upgrade


def pytest_configure(config) -> None:
    """Bank details are encrypted with VOZVRAT_SECRET_KEY and nothing starts without one
    (models.settings): the test session makes its own, unless one is configured."""
    if not (os.environ.get("VOZVRAT_SECRET_KEY") or os.environ.get("VOZVRAT_SECRET_KEY_FILE")):
        from cryptography.fernet import Fernet

        from models.settings import get_settings

        os.environ["VOZVRAT_SECRET_KEY"] = Fernet.generate_key().decode("ascii")
        get_settings.cache_clear()


PG_ADMIN_URL = os.environ.get("VOZVRAT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_admin_engine():
    return make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="session")
def postgres_available() -> None:
    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not here"
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc} (the development and CI machines run it at 127.0.0.1:5432)")
    finally:
        engine.dispose()


def _create_pg_database() -> tuple[str, str]:
    name = f"vozvrat_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_pg_database(name: str) -> None:
    admin = _pg_admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vozvrat.db'}"
        upgrade(url)
        yield url
        return
    yield request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'vozvrat.db'}"
    upgrade(url)
    return url


@pytest.fixture
def pg_url(postgres_available):
    name, url = _create_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# --- a real browser: Playwright (the Python package) driving Debian's Chromium --------------------
# `make test` installs Debian's chromium when it is missing (Makefile, target `browser`); Playwright's
# own browser download is never used (no internet at run time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


@pytest.fixture
def chromium():
    """A headless Chromium (Debian's binary) for one browser test.

    Per test, not per session: while Playwright's sync API is started, the main thread has a running
    event loop, and every later `asyncio.run` in the same process (outbox dispatch, SMTP) would fail."""
    import shutil

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed: `make browser` installs it (`make test` runs it first)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser context and page (its own cookies), closed after the test; a phone-sized viewport."""
    context = chromium.new_context(viewport={"width": 390, "height": 844}, locale="ru-RU")
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()
