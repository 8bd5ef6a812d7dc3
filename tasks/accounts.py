"""People who sign in: organizers' users and operator staff. Passwords hashed with argon2 (argon2-cffi).

The organizer page and the API resolve a signed-in user to a tasks.auth.Principal with `user_principal`;
`vozvrat users …` creates accounts. A user's API token is `vzu_…` (tasks/auth.py), stored as a digest,
named, expiring and revocable.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from models.tables import ApiToken, UserAccount
from tasks.auth import STAFF_ROLES, USER_PREFIX, Principal, digest, new_secret, organizer

user_t = UserAccount.__table__
api_token_t = ApiToken.__table__

_hasher = PasswordHasher()
MIN_PASSWORD = 10
TOKEN_DAYS = 90


class AccountError(ValueError):
    """Bad account input; the message is one line, fit for the CLI and the API."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password has at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class User:
    id: int
    login: str
    kind: str
    organizer_id: int | None
    role: str | None
    display_name: str

    @property
    def principal(self) -> Principal:
        return user_principal(self)


def user_principal(user: User) -> Principal:
    if user.kind == "organizer":
        assert user.organizer_id is not None
        return organizer(user.organizer_id, user_id=user.id, login=user.login)
    return Principal(kind="staff", audit=f"staff:{user.role}:{user.login}", role=user.role, user_id=user.id)


def _user(row) -> User:
    return User(id=row.id, login=row.login, kind=row.kind, organizer_id=row.organizer_id, role=row.role, display_name=row.display_name)


def create_user(engine: Engine, *, login: str, password: str | None, kind: str, now: datetime, organizer_id: int | None = None,
                role: str | None = None, display_name: str = "") -> User:
    """An organizer's user (kind organizer, organizer_id) or a staff member (kind staff, role)."""
    login = login.strip().lower()
    if not login or "@" not in login or len(login) > 320:
        raise AccountError("a login is the person's email")
    if kind == "organizer":
        if organizer_id is None or role is not None:
            raise AccountError("an organizer's user names its organizer and has no staff role")
    elif kind == "staff":
        if role not in STAFF_ROLES or organizer_id is not None:
            raise AccountError(f"a staff member has one role of {', '.join(STAFF_ROLES)} and no organizer")
    else:
        raise AccountError("kind is organizer or staff")
    password_hash = hash_password(password) if password is not None else None
    with engine.begin() as conn:
        if conn.execute(select(user_t.c.id).where(user_t.c.login == login)).first():
            raise AccountError(f"a user {login} exists")
        if organizer_id is not None and not conn.execute(select(1).select_from(user_t.metadata.tables["organizer"])
                                                         .where(user_t.metadata.tables["organizer"].c.id == organizer_id)).first():
            raise AccountError(f"no organizer {organizer_id}")
        user_id = conn.execute(insert(user_t).values(login=login, display_name=display_name.strip(), password_hash=password_hash,
                                                     kind=kind, organizer_id=organizer_id, role=role, created_at=now)
                               .returning(user_t.c.id)).scalar_one()
    return User(id=user_id, login=login, kind=kind, organizer_id=organizer_id, role=role, display_name=display_name.strip())


def authenticate(engine: Engine, login: str, password: str) -> User | None:
    """The active user with this login and password, or None (the same None for both mistakes)."""
    with engine.connect() as conn:
        row = conn.execute(select(user_t).where(user_t.c.login == login.strip().lower(), user_t.c.disabled_at.is_(None))).first()
    if row is None:
        _hasher.hash("spend-the-same-time")  # no timing difference between an unknown login and a wrong password
        return None
    return _user(row) if verify_password(row.password_hash, password) else None


def get_user(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(select(user_t).where(user_t.c.id == user_id, user_t.c.disabled_at.is_(None))).first()
    return None if row is None else _user(row)


def issue_api_token(engine: Engine, user_id: int, *, name: str, now: datetime, days: int = TOKEN_DAYS) -> str:
    """A named `vzu_` token for the user, valid for `days`; the secret is returned once, only its digest is kept."""
    if days < 1:
        raise AccountError("a token lives at least one day")
    secret = new_secret(USER_PREFIX)
    with engine.begin() as conn:
        if get_user(conn, user_id) is None:
            raise AccountError(f"no active user {user_id}")
        conn.execute(insert(api_token_t).values(user_id=user_id, name=name.strip() or "api", token_sha256=digest(secret),
                                                created_at=now, expires_at=now + timedelta(days=days)))
    return secret


def revoke_api_token(engine: Engine, user_id: int, name: str, *, now: datetime) -> int:
    with engine.begin() as conn:
        return conn.execute(update(api_token_t).where(api_token_t.c.user_id == user_id, api_token_t.c.name == name,
                                                      api_token_t.c.revoked_at.is_(None)).values(revoked_at=now)).rowcount


def resolve_user_token(engine: Engine, secret: str, *, now: datetime) -> Principal | None:
    with engine.connect() as conn:
        user_id = conn.execute(select(api_token_t.c.user_id).where(
            api_token_t.c.token_sha256 == digest(secret), api_token_t.c.revoked_at.is_(None), api_token_t.c.expires_at > now,
        )).scalar_one_or_none()
        user = None if user_id is None else get_user(conn, user_id)
    return None if user is None else user_principal(user)


def find_user(engine: Engine, login: str, *, active_only: bool = False) -> User | None:
    """The user with this login (any case), or None; `active_only` leaves disabled users out."""
    query = select(user_t).where(user_t.c.login == login.strip().lower())
    if active_only:
        query = query.where(user_t.c.disabled_at.is_(None))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else _user(row)


def disable_user(engine: Engine, login: str, *, now: datetime) -> bool:
    """Disable the user from `now` on: no sign-in, the session and every API token stop working. False: no active user."""
    with engine.begin() as conn:
        return conn.execute(update(user_t).where(user_t.c.login == login.strip().lower(), user_t.c.disabled_at.is_(None))
                            .values(disabled_at=now)).rowcount == 1


def list_users(engine: Engine) -> list[dict]:
    """Every user with its live (unrevoked, unexpired as of now is the caller's to judge) token names."""
    with engine.connect() as conn:
        users = conn.execute(select(user_t).order_by(user_t.c.kind, user_t.c.organizer_id, user_t.c.login)).all()
        tokens = conn.execute(select(api_token_t.c.user_id, api_token_t.c.name, api_token_t.c.expires_at)
                              .where(api_token_t.c.revoked_at.is_(None)).order_by(api_token_t.c.id)).all()
    by_user: dict[int, list[dict]] = {}
    for t in tokens:
        by_user.setdefault(t.user_id, []).append({"name": t.name, "expires_at": t.expires_at.isoformat()})
    return [{"login": u.login, "name": u.display_name, "kind": u.kind, "organizer_id": u.organizer_id, "role": u.role,
             "disabled_at": u.disabled_at.isoformat() if u.disabled_at else None, "tokens": by_user.get(u.id, [])} for u in users]
