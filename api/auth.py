"""The API's callers: one dependency resolves `Authorization: Bearer …` to a tasks.auth.Principal.

Routes declare whom they serve with `Depends(requires(...))`; the audit rows they cause record
`principal.audit`. No credentials, or unknown ones: 401. Known but not allowed here: 403. A claim or
order the caller may not see answers 404, like a missing one (the routes decide that).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.engine import Engine

from api.clock import Now
from models.db import get_engine
from tasks.accounts import resolve_user_token
from tasks.auth import BUYER_PREFIX, SERVICE_PREFIX, USER_PREFIX, Principal, PrincipalKind, resolve_organizer_token, resolve_service_key
from tasks.buyer_auth import resolve_buyer_token


def resolve_bearer(engine: Engine, secret: str, *, now: datetime) -> Principal | None:
    """The principal a bearer secret stands for, by its prefix (tasks/auth.py), or None (401, without saying why)."""
    if secret.startswith(SERVICE_PREFIX):
        return resolve_service_key(engine, secret, now=now)
    if secret.startswith(USER_PREFIX):
        return resolve_user_token(engine, secret, now=now)
    if secret.startswith(BUYER_PREFIX):
        return resolve_buyer_token(engine, secret, now=now)
    return resolve_organizer_token(engine, secret, now=now)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, detail=[{"loc": ["header", "authorization"], "msg": message, "type": "auth"}],
                         headers={"WWW-Authenticate": "Bearer"})


def optional_principal(request: Request, now: Now, authorization: Annotated[str | None, Header()] = None) -> Principal | None:
    """The caller, if any credentials were sent; a page's session cookie is resolved by the page's own
    dependency and stored on `request.state.principal` before this runs."""
    known = getattr(request.state, "principal", None)
    if known is not None:
        return known
    if not authorization:
        return None
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _unauthorized("Нужен заголовок Authorization: Bearer <ключ>.")
    principal = resolve_bearer(get_engine(), secret.strip(), now=now)
    if principal is None:
        raise _unauthorized("Ключ не распознан или отозван.")
    return principal


def requires(*kinds: PrincipalKind, roles: tuple[str, ...] = ()) -> Callable[..., Principal]:
    """A dependency admitting callers of these kinds (staff only with one of `roles`, when given)."""

    def dependency(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
        if principal is None:
            raise _unauthorized("Нужна авторизация.")
        if principal.kind not in kinds or (principal.kind == "staff" and roles and principal.role not in roles):
            raise HTTPException(403, detail=[{"loc": ["header", "authorization"], "msg": "Недостаточно прав для этого действия.",
                                              "type": "forbidden"}])
        return principal

    return dependency


# The usual audiences, named once.
Buyerish = Annotated[Principal, Depends(requires("service", "buyer"))]  # the buyer, or the operator's site vouching for one
Service = Annotated[Principal, Depends(requires("service"))]  # the operator's systems
OrganizerOrStaff = Annotated[Principal, Depends(requires("organizer", "staff"))]
Staff = Annotated[Principal, Depends(requires("staff"))]
