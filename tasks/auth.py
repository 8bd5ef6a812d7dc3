"""Who calls: every endpoint resolves its caller to a Principal, and audit rows record `Principal.audit`.

DESIGN, Security: "Every endpoint knows its caller (service key, buyer token for one order, organizer
user, staff user with a role) and the audit row records that principal, never a name the client typed."

Bearer secrets carry a prefix naming their kind, so one header resolves without guessing:
  vzs_…  an operator service key (the sales system, the operator's site vouching for its signed-in buyer)
  vzb_…  a buyer token, scoped to one order (tasks/buyer_auth.py)
  vzu_…  a user's API token: organizer user or staff (tasks/accounts.py)
  other  an organizer's legacy API token (`vozvrat organizers token`)
api/auth.py dispatches a bearer secret by its prefix to the resolvers here and in those modules.
Only SHA-256 digests of secrets are stored.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from models.tables import Organizer, ServiceKey

PrincipalKind = Literal["service", "buyer", "organizer", "staff"]
STAFF_ROLES = ("support", "supervisor", "accounting")

SERVICE_PREFIX = "vzs_"
BUYER_PREFIX = "vzb_"
USER_PREFIX = "vzu_"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request.

    `audit` is what every audit row and decision records (`service:<key name>`, `buyer:order:<number>`,
    `organizer:<id>` or `organizer:<id>:user:<login>`, `staff:<role>:<login>`).
    """

    kind: PrincipalKind
    audit: str
    organizer_id: int | None = None  # organizer principals: the organizer whose events they see
    order_number: str | None = None  # buyer principals: the one order the token covers
    role: str | None = None  # staff principals: support | supervisor | accounting
    user_id: int | None = None  # a signed-in user (organizer user or staff)

    def covers_order(self, order_number: str) -> bool:
        """A service key vouches for any order; a buyer token for its own order only."""
        return self.kind == "service" or (self.kind == "buyer" and self.order_number == order_number)

    def is_staff(self, *roles: str) -> bool:
        return self.kind == "staff" and (not roles or self.role in roles)

    @property
    def shown_as(self) -> str:
        """Who is signed in, as a page header says it: the login (and a staff member's role in Russian),
        not the audit principal's technical form."""
        if ":user:" in self.audit:
            return self.audit.split(":user:", 1)[1]
        if self.kind == "staff":
            login = self.audit.split(":", 2)[-1]
            return f"{login} ({STAFF_ROLE_RU.get(self.role or '', self.role)})"
        if self.kind == "organizer":
            return "организатор (ключ API)"
        return self.audit


STAFF_ROLE_RU = {"support": "поддержка", "supervisor": "старший смены", "accounting": "бухгалтерия"}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


service_key_t = ServiceKey.__table__
organizer_t = Organizer.__table__


class ServiceKeyExists(ValueError):
    pass


def create_service_key(engine: Engine, name: str, *, now: datetime) -> str:
    """A new service key named `name`; returns the secret, shown once (only its digest is stored)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a service key's name is 1 to 100 characters")
    secret = new_secret(SERVICE_PREFIX)
    with engine.begin() as conn:
        if conn.execute(select(service_key_t.c.id).where(service_key_t.c.name == name)).first():
            raise ServiceKeyExists(f"a service key named {name!r} exists; revoke it or choose another name")
        conn.execute(insert(service_key_t).values(name=name, key_sha256=digest(secret), created_at=now))
    return secret


def revoke_service_key(engine: Engine, name: str, *, now: datetime) -> bool:
    """Revoke the named key at `now`; False when no live key has that name."""
    with engine.begin() as conn:
        result = conn.execute(update(service_key_t).where(service_key_t.c.name == name, service_key_t.c.revoked_at.is_(None))
                              .values(revoked_at=now))
    return result.rowcount == 1


@dataclass(frozen=True)
class ServiceKeyInfo:
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def list_service_keys(engine: Engine) -> list[ServiceKeyInfo]:
    """Every service key, live and revoked, by name (never the secret: only its digest is stored)."""
    with engine.connect() as conn:
        rows = conn.execute(select(service_key_t.c.name, service_key_t.c.created_at, service_key_t.c.revoked_at,
                                   service_key_t.c.last_used_at).order_by(service_key_t.c.name)).all()
    return [ServiceKeyInfo(*r) for r in rows]


def resolve_service_key(engine: Engine, secret: str, *, now: datetime) -> Principal | None:
    with engine.connect() as conn:
        name = conn.execute(select(service_key_t.c.name).where(
            service_key_t.c.key_sha256 == digest(secret), service_key_t.c.revoked_at.is_(None))).scalar_one_or_none()
    return None if name is None else Principal(kind="service", audit=f"service:{name}")


def resolve_organizer_token(engine: Engine, secret: str, *, now: datetime) -> Principal | None:
    """An organizer's legacy API token (`vozvrat organizers token`), unexpired."""
    with engine.connect() as conn:
        organizer_id = conn.execute(select(organizer_t.c.id).where(
            organizer_t.c.api_token_sha256 == digest(secret), organizer_t.c.api_token_expires_at > now)).scalar_one_or_none()
    return None if organizer_id is None else organizer(organizer_id)


def organizer(organizer_id: int, *, user_id: int | None = None, login: str | None = None) -> Principal:
    """An organizer's principal: the organizer's token (`organizer:<id>`) or one of its users."""
    audit = f"organizer:{organizer_id}" if login is None else f"organizer:{organizer_id}:user:{login}"
    return Principal(kind="organizer", audit=audit, organizer_id=organizer_id, user_id=user_id)
