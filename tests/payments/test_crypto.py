"""models.crypto: bank details encrypted at rest with Fernet keyed by settings.secret_key."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from models.crypto import DecryptionError, SecretKeyError, decrypt_text, encrypt_text

DETAILS = "БИК 049805746; счёт 40602810700000000025; Иванов Иван"


def test_round_trip_with_settings_key():
    token = encrypt_text(DETAILS)
    assert "40602810700000000025" not in token and "Иванов" not in token
    assert decrypt_text(token) == DETAILS


def test_each_encryption_is_different():
    assert encrypt_text(DETAILS) != encrypt_text(DETAILS)


def test_wrong_key_is_a_clear_error():
    token = encrypt_text(DETAILS, key=Fernet.generate_key().decode())
    with pytest.raises(DecryptionError, match="VOZVRAT_SECRET_KEY"):
        decrypt_text(token)


def test_altered_token_is_refused():
    key = Fernet.generate_key().decode()
    token = encrypt_text(DETAILS, key=key)
    altered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(DecryptionError):
        decrypt_text(altered, key=key)


def test_not_a_token_is_refused():
    with pytest.raises(DecryptionError):
        decrypt_text("счёт 40602810700000000025")


def test_malformed_key_is_a_configuration_error():
    with pytest.raises(SecretKeyError, match="32 url-safe base64"):
        encrypt_text(DETAILS, key="short")
