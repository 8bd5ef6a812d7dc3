"""Accounts: argon2 passwords, users of organizers and staff, named user API tokens resolved to principals."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.auth import resolve_bearer
from models.db import make_engine
from tasks.accounts import AccountError, authenticate, create_user, issue_api_token, revoke_api_token
from tasks.auth import create_service_key, revoke_service_key
from tests import factories

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_users_sign_in_with_argon2_passwords_and_tokens_name_them(db_url):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        organizer_id = factories.organizer(conn)
    anna = create_user(engine, login="Anna@Org.ru", password="correct horse battery", kind="organizer", organizer_id=organizer_id, now=NOW)
    ivan = create_user(engine, login="ivan@operator.ru", password="another long one", kind="staff", role="supervisor", now=NOW)
    assert authenticate(engine, "anna@org.ru", "correct horse battery") == anna
    assert authenticate(engine, "anna@org.ru", "wrong password!!") is None
    assert authenticate(engine, "nobody@org.ru", "correct horse battery") is None

    token = issue_api_token(engine, anna.id, name="crm", now=NOW)
    principal = resolve_bearer(engine, token, now=NOW)
    assert principal.kind == "organizer" and principal.organizer_id == organizer_id
    assert principal.audit == f"organizer:{organizer_id}:user:anna@org.ru"
    assert resolve_bearer(engine, token, now=NOW + timedelta(days=91)) is None  # expired
    assert revoke_api_token(engine, anna.id, "crm", now=NOW) == 1
    assert resolve_bearer(engine, token, now=NOW) is None

    staff = resolve_bearer(engine, issue_api_token(engine, ivan.id, name="cli", now=NOW), now=NOW)
    assert (staff.kind, staff.role, staff.audit) == ("staff", "supervisor", "staff:supervisor:ivan@operator.ru")

    key = create_service_key(engine, "shop-site", now=NOW)
    assert resolve_bearer(engine, key, now=NOW).audit == "service:shop-site"
    assert revoke_service_key(engine, "shop-site", now=NOW)
    assert resolve_bearer(engine, key, now=NOW) is None
    engine.dispose()


@pytest.mark.parametrize("kwargs", [
    {"login": "no-at-sign", "kind": "staff", "role": "support"},
    {"login": "a@b.ru", "kind": "staff", "role": "admin"},
    {"login": "a@b.ru", "kind": "organizer"},
    {"login": "a@b.ru", "kind": "staff", "role": "support", "password": "short"},
])
def test_bad_accounts_are_refused(sqlite_url, kwargs):
    engine = make_engine(sqlite_url)
    with pytest.raises(AccountError):
        create_user(engine, now=NOW, **{"password": "long enough password", **kwargs})
    engine.dispose()
