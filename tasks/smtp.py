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


def _translate(exc: BaseException, settings: SmtpSettings) -> Exception:
    """aiosmtplib's error -> SmtpUnavailable (retry later) or SmtpRejected (permanent)."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # A wrong password is a configuration problem: keep messages pending, do not fail them all.
        return SmtpUnavailable(f"SMTP login failed: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if codes and all(_is_permanent(c) for c in codes):
            return SmtpRejected(f"recipients refused: {detail}")
        return SmtpUnavailable(f"recipients deferred: {detail}")
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPServerDisconnected):
        return SmtpUnavailable(f"SMTP server {settings.host}:{settings.port} unavailable: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if _is_permanent(exc.code):
            return SmtpRejected(f"{exc.code} {exc.message}")
        return SmtpUnavailable(f"{exc.code} {exc.message}")
    return SmtpUnavailable(f"SMTP error: {exc}")


_SMTP_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)


async def send_message(message: EmailMessage, settings: SmtpSettings) -> None:
    """Deliver one message on its own connection; raise SmtpUnavailable (retryable) or SmtpRejected (permanent)."""
    async with SmtpConnection(settings) as connection:
        await connection.send(message)


class SmtpConnection:
    """One SMTP session reused for many messages (a dispatcher sends a batch without reconnecting).

    Connects on the first send; after any error the session is dropped and the next send opens a
    new one. A message is never resent here: whether to retry is the outbox's decision.
    """

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self._client: aiosmtplib.SMTP | None = None

    async def __aenter__(self) -> SmtpConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(hostname=s.host, port=s.port, timeout=s.timeout,
                                 start_tls=s.starttls)  # False: plain (the local sink); True: STARTTLS required
        await client.connect()
        if s.user:
            await client.login(s.user, s.password or "")
        return client

    async def send(self, message: EmailMessage) -> None:
        await self._send(lambda client: client.send_message(message))

    async def send_raw(self, *, sender: str, recipients: list[str], data: bytes) -> None:
        """A message already rendered to bytes (tasks.emails.render_email_bytes)."""
        await self._send(lambda client: client.sendmail(sender, recipients, data))

    async def _send(self, transaction) -> None:
        try:
            if self._client is None or not self._client.is_connected:
                self._client = await self._connect()
            await transaction(self._client)
        except _SMTP_ERRORS as exc:
            await self.close()
            raise _translate(exc, self.settings) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except _SMTP_ERRORS:
            client.close()
