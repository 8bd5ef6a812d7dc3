"""Signed status links (tasks/buyer_links.py) and the link every buyer email carries (tasks/outbox.py)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.settings import get_settings
from tasks.buyer_links import LinkExpired, LinkInvalid, link_secret, read_status_link, status_link_token, status_url
from tasks.emails import BUYER_CLAIM_TEMPLATES, TEMPLATES, render_parts
from tasks.outbox import with_status_link

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def settings(monkeypatch):
    monkeypatch.setenv("VOZVRAT_PUBLIC_URL", "https://vozvrat.example.ru")
    for key in ("VOZVRAT_LINK_SECRET", "VOZVRAT_LINK_SECRET_FILE"):  # the secret derived from the bank-details key
        monkeypatch.delenv(key, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_link_opens_its_claim_for_thirty_days_and_no_longer():
    token = status_link_token("VZ-0000042-1", now=NOW)
    assert read_status_link(token, now=NOW + timedelta(days=30)) == "VZ-0000042-1"
    with pytest.raises(LinkExpired):
        read_status_link(token, now=NOW + timedelta(days=30, seconds=1))
    assert status_url("VZ-0000042-1", now=NOW) == f"https://vozvrat.example.ru/s/{token}"


def test_a_forged_or_altered_link_is_refused(monkeypatch):
    token = status_link_token("VZ-0000042-1", now=NOW)
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "VZ-0000042-1", ""):
        with pytest.raises(LinkInvalid) as caught:
            read_status_link(bad, now=NOW)
        assert not isinstance(caught.value, LinkExpired)
    # another secret signed it
    monkeypatch.setenv("VOZVRAT_LINK_SECRET", "x" * 40)
    get_settings.cache_clear()
    with pytest.raises(LinkInvalid):
        read_status_link(token, now=NOW)


def test_the_secret_comes_from_the_setting_then_its_file_then_the_bank_details_key(monkeypatch, tmp_path):
    derived = link_secret()
    assert len(derived) == 32
    path = tmp_path / "link.key"
    from tasks.buyer_links import ensure_link_secret_file

    ensure_link_secret_file(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("VOZVRAT_LINK_SECRET_FILE", str(path))
    get_settings.cache_clear()
    assert link_secret() == path.read_text().strip().encode() != derived
    monkeypatch.setenv("VOZVRAT_LINK_SECRET", "y" * 40)
    get_settings.cache_clear()
    assert link_secret() == b"y" * 40


def test_every_buyer_claim_email_gets_a_fresh_link_when_sent_and_shows_it():
    assert BUYER_CLAIM_TEMPLATES == TEMPLATES - {"escalation_notice", "buyer_code", "inbound_confirm", "inbound_refused",
                                                 "event_postponed", "regime_deadline_notice"}
    payload = {"claim_number": "VZ-0000042-1", "event_title": "Щелкунчик"}
    sent = with_status_link("claim_withdrawn", payload, NOW)
    assert read_status_link(sent["status_url"].rsplit("/", 1)[1], now=NOW) == "VZ-0000042-1"
    _, text, html = render_parts("claim_withdrawn", sent)
    assert sent["status_url"] in text and f'href="{sent["status_url"]}"' in html and "Где мои деньги" in text
    # the organizer's and supervisor's notices carry none
    assert "status_url" not in with_status_link("escalation_notice", payload, NOW)


def test_the_sign_in_code_email_names_the_order_and_the_code_and_no_claim():
    subject, text, html = render_parts("buyer_code", {"order_number": "ORD-000042", "code": "042042", "valid_minutes": 15,
                                                      "buyer_name": "Анна"})
    assert subject == "Код для входа: заказ № ORD-000042"
    for body in (text, html):
        assert "042042" in body and "15 минут" in body and "Осторожно, мошенники!" in body and "http" not in body
