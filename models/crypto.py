"""Bank details at rest (DESIGN "Security"): Fernet (AES-128-CBC + HMAC-SHA256) keyed by settings.secret_key.

A token carries its own timestamp and MAC, so a wrong key or a tampered value is detected, never
decrypted into garbage.
"""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from models.settings import get_settings

__all__ = ["DecryptionError", "SecretKeyError", "decrypt_text", "encrypt_text"]


class SecretKeyError(ValueError):
    """VOZVRAT_SECRET_KEY is not a Fernet key."""


class DecryptionError(ValueError):
    """A token could not be decrypted: wrong VOZVRAT_SECRET_KEY, or the stored value was altered."""


def _fernet(key: str | None) -> Fernet:
    raw = key if key is not None else get_settings().secret_key.get_secret_value()
    try:
        return Fernet(raw)
    except (ValueError, TypeError) as exc:
        raise SecretKeyError(
            "VOZVRAT_SECRET_KEY must be 32 url-safe base64-encoded bytes "
            "(generate one with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
        ) from exc


def encrypt_text(plain: str, *, key: str | None = None) -> str:
    """Encrypt `plain` (UTF-8) into an ASCII token; `key` overrides settings.secret_key (tests, rotation)."""
    return _fernet(key).encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt_text(token: str, *, key: str | None = None) -> str:
    """Decrypt a token made by `encrypt_text`; DecryptionError on a wrong key or an altered token."""
    try:
        return _fernet(key).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise DecryptionError(
            "cannot decrypt bank details: the token was made with another VOZVRAT_SECRET_KEY or was altered"
        ) from exc
