"""Claims by email: an inbound SMTP server (aiosmtpd) for the refunds address, and what it does with a letter.

The Kassy.ru and RedKassa process in the seed: a letter to the refunds address «с почтового ящика,
используемого плательщиком в момент оформления заказа», with scans and PDF tickets. Here:

1. **Kept first.** A letter's raw bytes are written to `<data_dir>/inbound/<sha[:2]>/<sha256>.eml`
   (temporary name, fsync, rename) and recorded in `inbound_letter` (status `received`) before the
   sender hears "250". If either fails, the sender hears "451" and its server tries again later:
   a letter is never lost. The same bytes sent twice (an MTA's retry) are one letter.
2. **Then processed** (`process_letter`): in a worker thread right after the answer, and again by
   `drain` for any letter still `received` (a crash, a restart, a database outage). A letter that
   keeps crashing is `failed` after MAX_ATTEMPTS, kept, and listed by `vozvrat inbound list`.
3. **Every letter is answered** from a template through the outbox, except mail written by
   machines (RFC 3834 headers, bounces, our own address, replies to our replies: no reply storms)
   and beyond REPLIES_PER_DAY to one address.
4. A letter naming an order, sent from the order's own email, becomes a *pending* email claim
   (tasks/inbound_claims.py): a From header can be forged, so nothing is filed until the buyer
   confirms from the order's mailbox. For an unknown order and for a From that is not the order's
   email the reply is the same neutral one: it never tells whether an order exists.

Run in the foreground (`make up` starts it)::

    python -m tasks.inbound_mail --port 2525
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from models.settings import get_settings
from models.tables import Event, InboundLetter, Order, Ticket
from states.letter import automatic_mail, order_number_candidates, recognise_reason
from tasks import documents
from tasks.files import keep_once
from tasks.inbound_claims import create_pending_claim, open_claims_by_ticket, open_claims_reply
from tasks.outbox import enqueue_email

log = logging.getLogger("vozvrat.inbound")

letter_t = InboundLetter.__table__
order_t = Order.__table__
ticket_t = Ticket.__table__
event_t = Event.__table__

MAX_ATTEMPTS = 5
LEASE = timedelta(minutes=5)
REPLIES_PER_DAY = 5  # to one address: a loop the headers did not reveal stops here
MAX_ATTACHMENTS = 10
MAX_TEXT = 20_000  # characters of the letter's text kept as the claim's description (and searched)
OWN_MESSAGE_MARKER = ".vozvrat@"  # every Message-ID we send carries it (tasks.emails.message_id_for)


def _backoff(attempts: int) -> timedelta:
    return min(timedelta(minutes=1) * 2 ** max(attempts - 1, 0), timedelta(hours=1))


def inbound_dir() -> Path:
    return Path(get_settings().data_dir).absolute() / "inbound"


def _relative_path(sha256: str) -> str:
    return f"inbound/{sha256[:2]}/{sha256}.eml"


def raw_letter(path: str) -> bytes:
    return (Path(get_settings().data_dir).absolute() / path).read_bytes()


def keep_letter(engine: Engine, raw: bytes, *, envelope_from: str, rcpt_tos: list[str], now: datetime, too_large: bool = False) -> int:
    """Keep a letter's raw bytes on disk, then record it (`received`); returns its id. The same bytes
    again (a sending server's retry after a lost "250") return the first letter's id."""
    sha = hashlib.sha256(raw).hexdigest()
    rel = _relative_path(sha)
    keep_once(Path(get_settings().data_dir).absolute() / rel, raw)
    try:
        with engine.begin() as conn:
            return conn.execute(insert(letter_t).values(
                sha256=sha, path=rel, size=len(raw), envelope_from=_clean(envelope_from)[:320], rcpt_tos=[_clean(r)[:320] for r in rcpt_tos][:20],
                received_at=now, too_large=too_large, status="received", attempts=0, next_attempt_at=now,
            )).inserted_primary_key[0]
    except IntegrityError:
        with engine.connect() as conn:
            return conn.execute(select(letter_t.c.id).where(letter_t.c.sha256 == sha)).scalar_one()


# --- reading a letter -------------------------------------------------------------------------

@dataclass
class Attachment:
    filename: str
    data: bytes


@dataclass
class ReadLetter:
    headers: dict[str, str]  # lower-cased names, first occurrence
    from_address: str
    subject: str
    text: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    malformed: str | None = None  # why the body could not be read


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    """No NUL or other control characters (PostgreSQL refuses NUL in text; nobody needs the rest)."""
    return _CONTROL.sub("", text)


def _decoded(value: Any) -> str:
    try:
        return _clean(str(make_header(decode_header(str(value)))))
    except Exception:  # noqa: BLE001 - a broken encoded-word is shown as sent
        return _clean(str(value))


_TAGS = re.compile(r"(?s)<(script|style)\b.*?</\1>|<[^>]+>")


def _valid_address(address: str) -> bool:
    return bool(re.fullmatch(r"[^@\s<>,;\"\x00-\x1f]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z0-9-]{2,63}", address or ""))


def read_letter(raw: bytes) -> ReadLetter:
    """Headers (never fails), then the text and the attachments (a failure there is `malformed`)."""
    head = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
    headers: dict[str, str] = {}
    for name, value in head.items():
        headers.setdefault(name.lower(), _decoded(value))
    from_address = parseaddr(headers.get("from", ""))[1].strip()
    letter = ReadLetter(headers=headers, from_address=from_address, subject=" ".join(headers.get("subject", "").split())[:500])
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        body = message.get_body(preferencelist=("plain", "html"))
        if body is not None:
            text = body.get_content()
            if body.get_content_subtype() == "html":
                text = html.unescape(_TAGS.sub(" ", text))
            letter.text = _clean(text)[:MAX_TEXT]
        parts: list[Message] = [p for p in message.walk() if not p.is_multipart() and p is not body]
        for part in parts:
            if part.get_content_maintype() == "text" and not part.get_filename():
                continue  # an alternative rendering of the text, not a file
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                raise ValueError("an attachment without content")
            if part.get("Content-ID") and part.get_content_disposition() != "attachment" and documents.sniff(payload) is None:
                continue  # a picture of the letter itself (a signature's logo), not a file the buyer sent
            name = _decoded(part.get_filename() or "") or f"вложение-{len(letter.attachments) + 1}"
            letter.attachments.append(Attachment(filename=" ".join(name.split())[:200], data=payload))
        if not body and not letter.attachments and message.defects:
            raise ValueError(f"{type(message.defects[0]).__name__}")
    except Exception as exc:  # noqa: BLE001 - any way a letter can be broken is one answer
        letter.malformed = _clean(f"{type(exc).__name__}: {exc}")[:300]
    return letter


# --- processing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class InboundConfig:
    """What processing needs from the configuration (tests pass their own)."""

    refunds_address: str
    own_addresses: frozenset[str]
    max_bytes: int

    @classmethod
    def from_settings(cls) -> InboundConfig:
        s = get_settings()
        own = {s.refunds_address.casefold(), parseaddr(s.mail_from)[1].casefold()}
        return cls(refunds_address=s.refunds_address, own_addresses=frozenset(own), max_bytes=s.inbound_max_bytes)


def _enqueue_reply(session: Session, *, letter_id: int, recipient: str, outcome: str, now: datetime, **context: Any) -> None:
    enqueue_email(session, dedup_key=f"inbound:{letter_id}:reply", claim_id=None, template="inbound_refused", recipient=recipient,
                  payload={"outcome": outcome, "letter_ref": letter_ref(letter_id), **context}, now=now)


def letter_ref(letter_id: int) -> str:
    return f"{letter_id:06d}"


def _finish(engine: Engine, letter_id: int, *, outcome: str, now: datetime, letter: ReadLetter | None, reply_to: str | None,
            reply: dict[str, Any] | None, pending: Callable[[Any], None] | None = None) -> str:
    """Record the outcome, the reply and the pending claim in one transaction (all or nothing)."""
    with engine.begin() as conn:
        values: dict[str, Any] = dict(status="processed", outcome=outcome, processed_at=now, lease_until=None, last_error=None)
        if letter is not None:
            values |= dict(message_id=(letter.headers.get("message-id") or "")[:300] or None, from_address=letter.from_address[:320] or None,
                           subject=letter.subject[:500] or None)
        if pending is not None:
            pending(conn)
        if reply_to is not None and (reply is not None or pending is not None):
            values["replied_to"] = reply_to.casefold()
        if reply is not None and reply_to is not None:
            with Session(bind=conn) as session:
                _enqueue_reply(session, letter_id=letter_id, recipient=reply_to, outcome=outcome, now=now, **reply)
                session.flush()
        moved = conn.execute(update(letter_t).where(letter_t.c.id == letter_id, letter_t.c.status == "received").values(**values)).rowcount
        if moved != 1:
            raise RuntimeError(f"letter {letter_id} was processed meanwhile")
    return outcome


def _replies_today(engine: Engine, address: str, now: datetime) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(letter_t).where(
            letter_t.c.replied_to == address.casefold(), letter_t.c.processed_at > now - timedelta(days=1))).scalar_one()


def _find_order(engine: Engine, candidates: list[str]) -> Any | None:
    if not candidates:
        return None
    wanted = [c.upper() for c in candidates]
    spellings = sorted({v for c in candidates for v in (c, c.upper(), c.lower())})  # the unique index on number finds them
    with engine.connect() as conn:
        rows = conn.execute(select(order_t.c.id, order_t.c.number, order_t.c.buyer_email, order_t.c.buyer_name)
                            .where(order_t.c.number.in_(spellings))).all()
    by_number = {r.number.upper(): r for r in rows}
    return next((by_number[c] for c in wanted if c in by_number), None)


def process_letter(engine: Engine, letter_id: int, *, now: datetime, config: InboundConfig | None = None) -> str | None:
    """Process one `received` letter (leased, so two processes never both do); returns its outcome,
    or None when it was not due here. A crash leaves it `received` with the error, for a later pass."""
    config = config or InboundConfig.from_settings()
    with engine.begin() as conn:
        taken = conn.execute(update(letter_t).where(
            letter_t.c.id == letter_id, letter_t.c.status == "received",
            (letter_t.c.lease_until.is_(None)) | (letter_t.c.lease_until <= now),
        ).values(lease_until=now + LEASE, attempts=letter_t.c.attempts + 1)).rowcount
        if taken != 1:
            return None
        row = conn.execute(select(letter_t).where(letter_t.c.id == letter_id)).one()
    try:
        return _process(engine, row, now=now, config=config)
    except Exception as exc:
        failed = row.attempts + 1 >= MAX_ATTEMPTS
        with engine.begin() as conn:
            conn.execute(update(letter_t).where(letter_t.c.id == letter_id, letter_t.c.status == "received").values(
                status="failed" if failed else "received", lease_until=None, last_error=_clean(f"{type(exc).__name__}: {exc}")[:1000],
                next_attempt_at=now + _backoff(row.attempts + 1)))
        log.exception("letter %s: processing failed (attempt %s)%s", letter_id, row.attempts + 1, "; given up" if failed else "")
        raise


def _process(engine: Engine, row: Any, *, now: datetime, config: InboundConfig) -> str:
    letter_id = row.id
    letter = read_letter(raw_letter(row.path))
    reply_to = letter.from_address if _valid_address(letter.from_address) else (
        row.envelope_from if _valid_address(row.envelope_from) else None)

    def finish(outcome: str, reply: dict[str, Any] | None = None, pending: Callable[[Any], None] | None = None,
               to: str | None = reply_to) -> str:
        return _finish(engine, letter_id, outcome=outcome, now=now, letter=letter, reply_to=to, reply=reply, pending=pending)

    loop = automatic_mail(letter.headers, envelope_from=row.envelope_from, from_address=letter.from_address,
                          own_addresses=config.own_addresses, own_message_marker=OWN_MESSAGE_MARKER)
    if loop is not None:
        log.info("letter %s: no reply (%s)", letter_id, loop)
        return finish("loop")
    if reply_to is None:
        return finish("no_sender")
    if _replies_today(engine, reply_to, now) >= REPLIES_PER_DAY:
        log.warning("letter %s: no reply, %s had %s replies in a day", letter_id, reply_to, REPLIES_PER_DAY)
        return finish("rate_limited")
    common = {"refunds_address": config.refunds_address}
    if row.too_large:
        return finish("too_large", common | {"max_mb": max(1, config.max_bytes // (1024 * 1024))})
    if config.refunds_address.casefold() not in {r.casefold() for r in row.rcpt_tos}:
        return finish("not_refunds_address", common)
    if letter.malformed is not None:
        log.info("letter %s: malformed (%s)", letter_id, letter.malformed)
        return finish("malformed", common)
    # A refusal names every problem of the letter: the files are judged before the order number, so a
    # letter without a number (or with one we cannot match) is told about its refused files too. The
    # files depend on the letter alone: an unknown order and a forged From still get the same words.
    refused = _refused_attachments(letter.attachments)
    files = {"refused_files": refused} if refused else {}
    candidates = order_number_candidates(letter.subject, letter.text)
    if not candidates:
        return finish("no_order_number", common | files)
    order = _find_order(engine, candidates)
    # An unknown order and a From that is not the order's email get the same words: the reply never
    # tells whether an order exists, or whose it is.
    if order is None or order.buyer_email.strip().casefold() != letter.from_address.casefold():
        return finish("not_matched", common | files)
    if refused:
        return finish("bad_attachment", common | files)
    with engine.connect() as conn:
        tickets = conn.execute(select(ticket_t.c.id, ticket_t.c.barcode, event_t.c.status, event_t.c.title)
                               .join(event_t, event_t.c.id == ticket_t.c.event_id).where(ticket_t.c.order_id == order.id)
                               .order_by(ticket_t.c.id)).all()
    named = [t for t in tickets if t.barcode and t.barcode in letter.text]  # the letter may name some of the order's tickets
    tickets = named or tickets
    if not tickets:
        return finish("not_matched", common)
    with engine.connect() as conn:
        in_work = open_claims_by_ticket(conn, [t.id for t in tickets])
    if len(in_work) == len(tickets):  # every ticket already has a claim in work: say so, with its link, to the order's mailbox
        return finish("claim_open", common | {"open_claims": open_claims_reply(list(in_work.values()), now=now)}, to=order.buyer_email)
    statuses = {t.status for t in tickets}
    recognised = recognise_reason(letter.subject, letter.text, event_status=statuses.pop() if len(statuses) == 1 else "scheduled")
    stored = [(a.filename, documents.store(a.data)) for a in letter.attachments]

    def pending(conn: Any) -> None:
        create_pending_claim(conn, letter_id=letter_id, order_id=order.id, ticket_ids=[t.id for t in tickets], reason=recognised.reason,
                             why=recognised.why, description=letter.text.strip()[:4000], files=stored, now=now)

    # The confirmation (tasks/inbound_claims.py) goes to the order's email and is this letter's reply.
    return finish("pending_claim", pending=pending, to=order.buyer_email, reply=None)


def _refused_attachments(attachments: list[Attachment]) -> list[dict[str, str]]:
    """Each file that cannot become a document, with the reason (tasks/documents.py decides)."""
    refused = []
    limit = get_settings().document_max_bytes
    for i, a in enumerate(attachments):
        if i >= MAX_ATTACHMENTS:
            refused.append({"filename": a.filename, "reason": f"В одном письме принимаем не больше {MAX_ATTACHMENTS} файлов."})
            continue
        if not a.data:
            refused.append({"filename": a.filename, "reason": "Файл пустой или не читается."})
        elif len(a.data) > limit:
            refused.append({"filename": a.filename, "reason": f"Файл больше {limit // (1024 * 1024)} МБ."})
        elif documents.sniff(a.data) is None:
            refused.append({"filename": a.filename, "reason": "Принимаем только PDF, JPEG и PNG; этот файл не из них или повреждён."})
    return refused


def drain(engine: Engine, *, now: datetime, limit: int = 100, config: InboundConfig | None = None) -> dict[str, int]:
    """Process every due `received` letter (after a crash, a restart, an outage). Returns counts by outcome;
    a letter that crashes again stays `received` (or becomes `failed` after MAX_ATTEMPTS)."""
    with engine.connect() as conn:
        ids = list(conn.execute(select(letter_t.c.id).where(letter_t.c.status == "received", letter_t.c.next_attempt_at <= now)
                                .order_by(letter_t.c.id).limit(limit)).scalars())
    counts: dict[str, int] = {}
    for letter_id in ids:
        try:
            outcome = process_letter(engine, letter_id, now=now, config=config) or "skipped"
        except Exception:  # noqa: BLE001 - recorded on the letter; the others go on
            outcome = "error"
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


# --- the SMTP server ----------------------------------------------------------------------------

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class InboundHandler:
    """aiosmtpd handler: mail for the refunds address only; keep, answer, then process in a worker."""

    def __init__(self, engine: Engine, *, config: InboundConfig, clock: Clock = _utc_now,
                 process: Callable[..., str | None] = process_letter, after: Callable[[], Any] | None = None):
        self.engine, self.config, self.clock, self.process, self.after = engine, config, clock, process, after
        self.domain = config.refunds_address.rpartition("@")[2].casefold()
        self.workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inbound")
        self.pending: set[Future] = set()
        self._lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        # Our own domain only (the refunds address, or another of ours: answered with where to write);
        # never a relay.
        if address.rpartition("@")[2].casefold() != self.domain:
            return f"550 5.7.1 Relaying denied: this server takes mail for {self.config.refunds_address} only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or (envelope.content if isinstance(envelope.content, bytes) else b"")
        too_large = len(raw) > self.config.max_bytes
        try:
            letter_id = await asyncio.to_thread(keep_letter, self.engine, raw, envelope_from=envelope.mail_from or "",
                                                rcpt_tos=list(envelope.rcpt_tos), now=self.clock(), too_large=too_large)
        except Exception as exc:  # noqa: BLE001 - disk or database trouble: a temporary refusal, the sender retries
            log.error("could not keep a letter (%s: %s): the sender will retry", type(exc).__name__, exc)
            return "451 4.3.0 Temporary failure, please try again later"
        self._submit(letter_id)
        if too_large:
            return f"552 5.3.4 Message too big: at most {self.config.max_bytes // (1024 * 1024)} MB; a reply explains"
        return "250 2.0.0 OK: the letter is received, a reply will follow"

    def _submit(self, letter_id: int) -> None:
        future = self.workers.submit(self._run, letter_id)
        with self._lock:
            self.pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future) -> None:
        with self._lock:
            self.pending.discard(future)

    def _run(self, letter_id: int) -> None:
        try:
            self.process(self.engine, letter_id, now=self.clock(), config=self.config)
        except Exception:  # noqa: BLE001 - recorded on the letter by process_letter; drain retries
            log.exception("letter %s: left for the next pass", letter_id)
        if self.after is not None:
            try:
                self.after()
            except Exception:  # noqa: BLE001 - the outbox keeps the reply; its dispatcher retries
                log.exception("sending replies failed; the outbox keeps them")

    def drain(self) -> dict[str, int]:
        counts = drain(self.engine, now=self.clock(), config=self.config)
        if counts and self.after is not None:
            self.after()
        return counts

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every letter received so far has been processed (tests, shutdown)."""
        with self._lock:
            futures = set(self.pending)
        wait_futures(futures, timeout=timeout)


@dataclass
class InboundServer:
    controller: Controller
    handler: InboundHandler
    host: str
    port: int

    def stop(self) -> None:
        self.controller.stop()
        self.handler.wait_idle()
        self.handler.workers.shutdown(wait=True)


def start_inbound(engine: Engine, *, host: str = "127.0.0.1", port: int = 0, config: InboundConfig | None = None, clock: Clock = _utc_now,
                  process: Callable[..., str | None] = process_letter, after: Callable[[], Any] | None = None) -> InboundServer:
    """Start the inbound SMTP server in a background thread (port 0: a free one). aiosmtpd itself refuses
    letters beyond twice `max_bytes`; between the two a letter is kept, refused with 552 and answered."""
    from tasks.smtp_sink import free_port

    config = config or InboundConfig.from_settings()
    handler = InboundHandler(engine, config=config, clock=clock, process=process, after=after)
    port = port or free_port(host)
    controller = Controller(handler, hostname=host, port=port, data_size_limit=2 * config.max_bytes, enable_SMTPUTF8=True,
                            ident="vozvrat inbound")
    controller.start()
    return InboundServer(controller=controller, handler=handler, host=host, port=port)


def _send_due_replies() -> None:
    from tasks.claims import send_claim_mail

    send_claim_mail(None, _utc_now())


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m tasks.inbound_mail", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.inbound_smtp_host)
    parser.add_argument("--port", type=int, default=settings.inbound_smtp_port)
    parser.add_argument("--drain-every", type=float, default=60.0, help="seconds between passes over letters left unprocessed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from models.crypto import require_secret_key
    from models.db import get_engine

    require_secret_key("the inbound mail server")  # confirmation links are signed with the service's keys

    engine = get_engine()
    server = start_inbound(engine, host=args.host, port=args.port, after=_send_due_replies)
    print(f"inbound SMTP on {server.host}:{server.port} for {settings.refunds_address}, letters kept in {inbound_dir()} (Ctrl+C to stop)",
          flush=True)
    stop = threading.Event()
    try:
        while not stop.is_set():
            try:
                counts = server.handler.drain()  # at start, then periodically: letters a crash or an outage left
                if counts:
                    log.info("drained letters: %s", counts)
            except Exception:  # noqa: BLE001 - the database may be down; the next pass tries again
                log.exception("drain failed")
            stop.wait(args.drain_every)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()


__all__ = ["InboundHandler", "InboundServer", "drain", "keep_letter", "process_letter", "read_letter", "start_inbound"]
