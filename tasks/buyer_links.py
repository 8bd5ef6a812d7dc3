"""Buyers' signed, expiring links to a claim's status page («Где мои деньги»), and the secret that signs
them (and the HMACs of sign-in codes, tasks/buyer_auth.py).

A link carries the claim number only, signed with itsdangerous (URLSafeTimedSerializer) under the link
secret; it opens the page for VOZVRAT_STATUS_LINK_DAYS. The outbox puts a fresh link in every email a
buyer gets when it sends it (tasks/outbox.py), so a message held back for days still carries a live one.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, Serializer, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

from models.crypto import SecretKeyError, secret_keys
from models.settings import get_settings

# --- the link secret -------------------------------------------------------------------------------

def ensure_link_secret_file(path: str | os.PathLike[str]) -> None:
    """The embedded stack's link secret: generated on first start (0600), reused afterwards."""
    path = Path(path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first
    try:
        os.write(fd, secrets.token_urlsafe(48).encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def link_secret() -> bytes:
    """VOZVRAT_LINK_SECRET, else the file VOZVRAT_LINK_SECRET_FILE, else derived from the bank-details key
    (HMAC with a label of its own, so the two secrets never act for each other)."""
    settings = get_settings()
    if settings.link_secret is not None and settings.link_secret.get_secret_value().strip():
        return settings.link_secret.get_secret_value().strip().encode()
    if settings.link_secret_file:
        try:
            text = Path(settings.link_secret_file).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretKeyError(f"cannot read the link secret file {settings.link_secret_file}: {exc.__class__.__name__}") from exc
        if len(text) < 32:
            raise SecretKeyError(f"the link secret in {settings.link_secret_file} is shorter than 32 characters")
        return text.encode("ascii")
    return hmac.new(secret_keys()[0].encode("ascii"), b"vozvrat buyer links v1", hashlib.sha256).digest()


# --- signed status links ---------------------------------------------------------------------------

class LinkInvalid(ValueError):
    """A status link that was not signed by us (or was altered)."""


class LinkExpired(LinkInvalid):
    """A genuine status link, older than its lifetime."""


class _LinkSerializer(URLSafeTimedSerializer):
    """itsdangerous' URL-safe serializer without its zlib attempt on dumping: a link's payload (a claim
    number) never gets shorter compressed, and the attempt alone cost ~0.2 ms a link (a mass send signs
    tens of thousands). The tokens are the same bytes as before; loading is itsdangerous' own."""

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


def _serializer(now: datetime, salt: str) -> URLSafeTimedSerializer:
    """itsdangerous with the clock passed in (time is an argument): the timestamp it signs and the age
    it checks are both taken from `now`."""
    at = int(now.timestamp())

    class _AtNow(TimestampSigner):
        def get_timestamp(self) -> int:
            return at

    return _LinkSerializer(link_secret(), salt=salt, signer=_AtNow)


STATUS_SALT = "vozvrat.status-link"


def status_link_token(claim_number: str, *, now: datetime) -> str:
    return _serializer(now, STATUS_SALT).dumps({"claim": claim_number})


def read_status_link(token: str, *, now: datetime, max_age: timedelta | None = None) -> str:
    """The claim number a status link opens; LinkExpired / LinkInvalid otherwise."""
    age = max_age if max_age is not None else timedelta(days=get_settings().status_link_days)
    try:
        data = _serializer(now, STATUS_SALT).loads(token, max_age=int(age.total_seconds()))
    except SignatureExpired:
        raise LinkExpired("the link has expired") from None
    except BadSignature:
        raise LinkInvalid("the link is not ours") from None
    if not isinstance(data, dict) or not isinstance(data.get("claim"), str):
        raise LinkInvalid("the link names no claim")
    return data["claim"]


def status_url(claim_number: str, *, now: datetime) -> str:
    """The «Где мои деньги» link put in every email the buyer gets (valid VOZVRAT_STATUS_LINK_DAYS)."""
    return f"{get_settings().public_url.rstrip('/')}/s/{status_link_token(claim_number, now=now)}"


def status_url_maker(now: datetime) -> Callable[[str], str]:
    """``status_url`` for many claims at one ``now`` (the outbox sending a batch): the secret, the
    signer and the base URL are made once. Raises SecretKeyError as ``status_url`` does."""
    serializer = _serializer(now, STATUS_SALT)
    base = f"{get_settings().public_url.rstrip('/')}/s/"
    return lambda claim_number: base + serializer.dumps({"claim": claim_number})
