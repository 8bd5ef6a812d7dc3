"""Send one rendered message over SMTP (aiosmtplib). Rendering lives in tasks.emails."""
from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib


class SmtpUnavailable(Exception):
    """The server could not take the message now (down, timeout, 4xx, bad login): retry later."""


class SmtpRejected(Exception):
    """The server refused the message for good (5xx): retrying the same message will not help."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 8025
    starttls: bool = False
    user: str | None = None
    password: str | None = None
    timeout: float = 10.0  # seconds, per SMTP command and for the connection

    @classmethod
    def from_settings(cls, settings: Any | None = None) -> SmtpSettings:
        """From models.settings (VOZVRAT_SMTP_*); the default is the running configuration."""
        if settings is None:
            from models.settings import get_settings

            settings = get_settings()
        password = settings.smtp_password
        if password is not None and hasattr(password, "get_secret_value"):
            password = password.get_secret_value()
        return cls(
            host=settings.smtp_host,
            port=int(settings.smtp_port),
            starttls=bool(settings.smtp_starttls),
            user=settings.smtp_user or None,
            password=password or None,
            timeout=float(getattr(settings, "smtp_timeout_seconds", cls.timeout)),
        )

    def __repr__(self) -> str:  # never print the password
        return (f"SmtpSettings(host={self.host!r}, port={self.port}, starttls={self.starttls}, "
                f"user={self.user!r}, password={'***' if self.password else None}, timeout={self.timeout})")


def _is_permanent(code: int) -> bool:
    return 500 <= code < 600


async def send_message(message: EmailMessage, settings: SmtpSettings) -> None:
    """Deliver one message; raise SmtpUnavailable (retryable) or SmtpRejected (permanent)."""
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.host,
            port=settings.port,
            username=settings.user,
            password=settings.password,
            start_tls=settings.starttls,  # False: plain (the local sink); True: STARTTLS required
            timeout=settings.timeout,
        )
    except aiosmtplib.SMTPAuthenticationError as exc:
        # A wrong password is a configuration problem: keep messages pending, do not fail them all.
        raise SmtpUnavailable(f"SMTP login failed: {exc.code} {exc.message}") from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if codes and all(_is_permanent(c) for c in codes):
            raise SmtpRejected(f"recipients refused: {detail}") from exc
        raise SmtpUnavailable(f"recipients deferred: {detail}") from exc
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPServerDisconnected) as exc:
        raise SmtpUnavailable(f"SMTP server {settings.host}:{settings.port} unavailable: {exc}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        if _is_permanent(exc.code):
            raise SmtpRejected(f"{exc.code} {exc.message}") from exc
        raise SmtpUnavailable(f"{exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise SmtpUnavailable(f"SMTP error: {exc}") from exc
