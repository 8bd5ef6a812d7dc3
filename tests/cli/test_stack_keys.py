"""The CLI run from the checkout after `make up`: the default database is var/vozvrat.db, and with no key
setting given the stack's key files beside it (var/secret.key, var/link.key) are used, so no export line
is needed. A key setting, or another database, and nothing is guessed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.crypto import ensure_key_file, read_key_file, secret_keys
from models.migrate import upgrade
from models.settings import Settings, get_settings
from tasks.buyer_links import ensure_link_secret_file, link_secret

REPO = Path(__file__).resolve().parents[2]
KEY_VARS = ("VOZVRAT_SECRET_KEY", "VOZVRAT_SECRET_KEY_FILE", "VOZVRAT_LINK_SECRET", "VOZVRAT_LINK_SECRET_FILE", "VOZVRAT_DATABASE_URL")


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A directory laid out as `make up` leaves the checkout: var/vozvrat.db, var/secret.key, var/link.key."""
    monkeypatch.chdir(tmp_path)
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    (tmp_path / "var").mkdir()
    upgrade("sqlite:///var/vozvrat.db")
    ensure_key_file(tmp_path / "var" / "secret.key")
    ensure_link_secret_file(tmp_path / "var" / "link.key")
    yield tmp_path
    get_settings.cache_clear()


def test_the_stacks_key_files_are_used_with_the_default_database(checkout):
    settings = Settings()
    assert (settings.secret_key_file, settings.link_secret_file) == ("var/secret.key", "var/link.key")
    assert secret_keys() == read_key_file(checkout / "var" / "secret.key")
    assert link_secret() == (checkout / "var" / "link.key").read_text(encoding="ascii").strip().encode()


def test_a_key_setting_or_another_database_guesses_nothing(checkout, monkeypatch):
    monkeypatch.setenv("VOZVRAT_SECRET_KEY_FILE", "/elsewhere/secret.key")
    assert Settings().secret_key_file == "/elsewhere/secret.key" and Settings().link_secret_file == "var/link.key"
    monkeypatch.delenv("VOZVRAT_SECRET_KEY_FILE")
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", f"sqlite:///{checkout / 'other.db'}")
    assert (Settings().secret_key_file, Settings().link_secret_file) == (None, None)


def test_the_cli_from_the_checkout_needs_no_export_line(checkout):
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS} | {"PYTHONPATH": str(REPO)}
    before = (checkout / "var" / "secret.key").read_text()
    result = subprocess.run([sys.executable, "-m", "cli", "secrets", "rotate"], cwd=checkout, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "var/secret.key now holds only the new key" in result.stdout
    assert (checkout / "var" / "secret.key").read_text() != before
