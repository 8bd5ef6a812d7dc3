"""Runtime settings, read from the environment (prefix VOZVRAT_) with embedded defaults for `make demo`."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///var/vozvrat.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOZVRAT_", extra="ignore")

    # The embedded stack's database (`make up` keeps its data under var/): the CLI, run from the
    # checkout, reads and writes the same file by default. Elsewhere set VOZVRAT_DATABASE_URL.
    database_url: str = DEFAULT_DATABASE_URL

    # Outbound email (aiosmtplib). Defaults point at the local sink started by `make up` / `make demo`.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "Возврат билетов <vozvrat@example.ru>"
    supervisor_email: str = "supervisor@example.ru"
    # Kill switch: when false nothing leaves the outbox (messages wait, nothing is lost).
    outbound_email_enabled: bool = True

    # Mass paths (issue 12). A send to more than this many recipients waits `held` for a second staff
    # user's approval (tasks/mass_sends.py); mail leaves at most this many messages per second per
    # dispatcher (0: no limit); card refunds go to the acquirer this many at a time; a mass
    # cancellation moves this many tickets per chunk (one transaction, one task run).
    mass_send_threshold: int = 100
    mail_rate_per_s: float = 200.0
    # SMTP connections the outbox-dispatch sweep sends over at once (a mass send); one claim's mail uses one.
    mail_connections: int = Field(default=1, ge=1, le=16)
    acquirer_concurrency: int = 16
    mass_chunk_size: int = 2000

    # Acquirer (YooKassa API or the local stand-in speaking its protocol).
    acquirer_api_url: str = "http://127.0.0.1:8765/v3"
    acquirer_shop_id: str = "100500"
    acquirer_secret_key: SecretStr = SecretStr("test_standin_secret")

    # Keys for bank details at rest (Fernet, urlsafe base64 32 bytes), never a default in the code.
    # VOZVRAT_SECRET_KEY: "NEW[,OLD...]": the first encrypts, every one decrypts (rotation, docs/ops.md).
    # VOZVRAT_SECRET_KEY_FILE: a file with one key per line, owner-only (0600): what the embedded
    # stack generates into its data directory. Without either, services refuse to start.
    secret_key: SecretStr | None = None
    secret_key_file: str | None = None

    # The operator, payer of bank transfers in the 1C export.
    operator_name: str = "ООО «Возврат Билетов»"
    operator_inn: str = "7707083893"
    operator_kpp: str = "773601001"
    operator_account: str = "40702810900000000001"
    operator_bank_bik: str = "044525225"
    operator_bank_name: str = "ПАО СБЕРБАНК"
    operator_bank_corr_account: str = "30101810400000000225"

    # Files the service keeps (documents, raw inbound mail): content-addressed under here, outside any web root.
    data_dir: str = "var"
    # Uploaded documents: at most this many bytes each; PDF, JPEG and PNG only (checked by content).
    document_max_bytes: int = 10 * 1024 * 1024

    # Claims by email (tasks/inbound_mail.py): an inbound SMTP server taking mail for the refunds address.
    inbound_smtp_host: str = "127.0.0.1"
    inbound_smtp_port: int = 2525
    refunds_address: str = "vozvrat@example.ru"
    # A letter larger than this is kept, refused with 552 and answered politely; aiosmtpd itself refuses
    # (and cannot keep) anything beyond twice this size.
    inbound_max_bytes: int = 25 * 1024 * 1024
    # How long a buyer has to confirm a claim sent by email, from the order's own mailbox.
    inbound_confirm_hours: int = 72
    # Buyers' signed links (the «Где мои деньги» page) and sign-in codes are signed with this secret.
    # VOZVRAT_LINK_SECRET, or VOZVRAT_LINK_SECRET_FILE (owner-only; the embedded stack generates one);
    # without either it is derived from the bank-details key (tasks/buyer_auth.py), so a rotation of
    # that key also ends every link issued before it.
    link_secret: SecretStr | None = None
    link_secret_file: str | None = None
    # Sign-in codes (POST /buyer/session, /buyer/sign-in): at most this many requests per client address
    # per hour, over all API workers (0: no limit), then 429 with Retry-After; and every request answers
    # no sooner than this many milliseconds, so a real order does not answer slower than an unknown one.
    buyer_code_requests_per_ip: int = 20
    buyer_code_floor_ms: int = 250
    # Where buyers reach the API and its pages: the base of every link in a buyer's email.
    public_url: str = "http://127.0.0.1:8000"
    # A status link in an email opens the page for this many days; then the buyer signs in for a fresh one.
    status_link_days: int = 30

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    prefect_ui_url: str = Field(default="http://127.0.0.1:4200")


    @model_validator(mode="after")
    def _stack_key_files(self) -> Settings:
        """The CLI run from the checkout after `make up`: it already finds the stack's database
        (var/vozvrat.db, the default); with no key setting given, it finds the stack's keys beside it
        too (var/secret.key, var/link.key, generated by the stack), so no export line is needed. Any
        key setting, or another database, and nothing is guessed."""
        if self.database_url != DEFAULT_DATABASE_URL:
            return self
        stack_dir = Path(DEFAULT_DATABASE_URL.removeprefix("sqlite:///")).parent
        bank_key_given = (self.secret_key is not None and self.secret_key.get_secret_value().strip()) or self.secret_key_file
        if not bank_key_given and (stack_dir / "secret.key").is_file():
            self.secret_key_file = str(stack_dir / "secret.key")
        link_given = (self.link_secret is not None and self.link_secret.get_secret_value().strip()) or self.link_secret_file
        if not link_given and (stack_dir / "link.key").is_file():
            self.link_secret_file = str(stack_dir / "link.key")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
