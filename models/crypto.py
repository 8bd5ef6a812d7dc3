"""Bank details at rest (DESIGN "Security"): Fernet (AES-128-CBC + HMAC-SHA256), keyed by
VOZVRAT_SECRET_KEY or by the key file of the embedded stack (models.settings).

A token carries its own timestamp and MAC, so a wrong key or a tampered value is detected, never
decrypted into garbage. Several keys make a MultiFernet: the first encrypts, every one decrypts, and
`reencrypt_bank_details` moves every stored token to the first key (`vozvrat secrets rotate`).
The key file is read on every use, so running processes follow a rotation without a restart.
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from models.settings import get_settings

__all__ = [
    "DecryptionError",
    "SecretKeyError",
    "decrypt_text",
    "encrypt_text",
    "ensure_key_file",
    "open_sealed",
    "seal_fields",
    "read_key_file",
    "reencrypt_bank_details",
    "secret_keys",
    "write_key_file",
]

GENERATE_HINT = "generate one with `vozvrat secrets generate`"


class SecretKeyError(ValueError):
    """No usable key for bank details: not set, not a Fernet key, or a key file others can read."""


class DecryptionError(ValueError):
    """A token could not be decrypted: wrong VOZVRAT_SECRET_KEY, or the stored value was altered."""


def _check_key(key: str, where: str) -> str:
    try:
        Fernet(key)
    except (ValueError, TypeError) as exc:
        raise SecretKeyError(f"{where} must hold 32 url-safe base64-encoded bytes per key ({GENERATE_HINT})") from exc
    return key


def read_key_file(path: str | os.PathLike[str]) -> list[str]:
    """The keys in a key file, one per line (first: current). Refused when group or others may read it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"cannot read the key file {path}: {getattr(exc, 'strerror', None) or exc.__class__.__name__}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise SecretKeyError(f"the key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 {path}")
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not keys:
        raise SecretKeyError(f"the key file {path} holds no key")
    return [_check_key(k, f"the key file {path}") for k in keys]


def write_key_file(path: str | os.PathLike[str], keys: list[str]) -> None:
    """Write keys (first: current) owner-only (0600), atomically: a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, ("".join(f"{_check_key(k, 'a new key')}\n" for k in keys)).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_key_file(path: str | os.PathLike[str]) -> list[str]:
    """The embedded stack's key: generated on first start (0600), reused afterwards."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_key_file(path)  # another process made it first
        try:
            os.write(fd, Fernet.generate_key() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    return read_key_file(path)


def secret_keys() -> list[str]:
    """The configured keys, current first. SecretKeyError when there are none."""
    settings = get_settings()
    if settings.secret_key is not None and settings.secret_key.get_secret_value().strip():
        keys = [k.strip() for k in settings.secret_key.get_secret_value().split(",") if k.strip()]
        return [_check_key(k, "VOZVRAT_SECRET_KEY") for k in keys]
    if settings.secret_key_file:
        return read_key_file(settings.secret_key_file)
    raise SecretKeyError(f"VOZVRAT_SECRET_KEY is not set: bank details cannot be encrypted ({GENERATE_HINT})")


def _fernet(key: str | None = None, keys: list[str] | None = None) -> MultiFernet:
    if key is not None:
        keys = [_check_key(key, "the key")]
    return MultiFernet([Fernet(k) for k in (keys or secret_keys())])


def encrypt_text(plain: str, *, key: str | None = None) -> str:
    """Encrypt `plain` (UTF-8) into an ASCII token with the current key; `key` overrides it (tests)."""
    return _fernet(key).encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt_text(token: str, *, key: str | None = None) -> str:
    """Decrypt a token made by `encrypt_text` with any configured key; DecryptionError on a wrong key or an altered token."""
    try:
        return _fernet(key).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise DecryptionError(
            "cannot decrypt bank details: the token was made with another VOZVRAT_SECRET_KEY or was altered"
        ) from exc


SEALED = "sealed"  # the payload key under which `seal_fields` keeps its encrypted fields


def seal_fields(payload: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """A message payload with `names` taken out and kept encrypted under "sealed" (a sign-in code in an
    outbox row: the database never holds it in the clear). `open_sealed` puts them back to render."""
    out = {k: v for k, v in payload.items() if k not in names}
    out[SEALED] = {name: encrypt_text(str(payload[name])) for name in names if name in payload}
    return out


def open_sealed(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The payload to render: sealed fields decrypted back in place (DecryptionError on a wrong key, a
    ValueError); a payload without sealed fields is returned as it is."""
    sealed = payload.get(SEALED)
    if not sealed:
        return payload
    return {**{k: v for k, v in payload.items() if k != SEALED}, **{name: decrypt_text(token) for name, token in sealed.items()}}


def reencrypt_bank_details(engine, *, keys: list[str] | None = None) -> int:
    """Re-encrypt every stored bank details token with the first key (decrypting with any), in one
    transaction; returns how many. DecryptionError (nothing changed) when a token opens with no key.

    A row changed meanwhile is left as it is (its new token already uses the current key).
    """
    from sqlalchemy import select, update

    from models.tables import Claim

    claim_t = Claim.__table__
    multi = _fernet(keys=keys)
    moved = 0
    with engine.begin() as conn:
        rows = conn.execute(select(claim_t.c.id, claim_t.c.bank_details).where(claim_t.c.bank_details.is_not(None))).all()
        for claim_id, token in rows:
            try:
                fresh = multi.rotate(token.encode("ascii")).decode("ascii")
            except (InvalidToken, UnicodeEncodeError) as exc:
                raise DecryptionError(f"claim {claim_id}: its bank details open with none of the keys; nothing was re-encrypted") from exc
            moved += conn.execute(
                update(claim_t).where(claim_t.c.id == claim_id, claim_t.c.bank_details == token).values(bank_details=fresh)
            ).rowcount
    return moved


def require_secret_key(what: str) -> None:
    """Refuse to start `what` without a key for bank details: one line on stderr, exit code 2."""
    try:
        secret_keys()
    except SecretKeyError as exc:
        print(f"error: {what} cannot start: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2) from None
