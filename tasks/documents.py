"""Document files: content-addressed under the data directory, outside any web root; metadata in `document`.

A file is accepted when it is a PDF, JPEG or PNG by its content (its magic bytes, read by the `filetype`
library, not the name or the declared type) and no larger than `document_max_bytes`. It is stored once as
`<data_dir>/documents/<sha256[:2]>/<sha256>` (written to a temporary name, then renamed: never half a
file under its final name). Serving a file is the caller's job, after it checked who asks.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import filetype
from sqlalchemy import select
from sqlalchemy.engine import Engine

from models.settings import get_settings
from tasks.auth import Principal
from tasks.files import keep_once

ACCEPTED = ("application/pdf", "image/jpeg", "image/png")
EXTENSIONS = {"application/pdf": ".pdf", "image/jpeg": ".jpg", "image/png": ".png"}


class DocumentRejected(ValueError):
    """The file is not accepted; `message_ru` says why, for the buyer."""

    def __init__(self, code: str, message_ru: str):
        super().__init__(message_ru)
        self.code = code
        self.message_ru = message_ru


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    content_type: str


def sniff(data: bytes) -> str | None:
    """The content type by the file's own bytes, or None when it is none of the accepted ones."""
    kind = filetype.guess(data[:8192])
    return kind.mime if kind is not None and kind.mime in ACCEPTED else None


def documents_dir() -> Path:
    return Path(get_settings().data_dir).absolute() / "documents"


def path_of(sha256: str) -> Path:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 digest")
    return documents_dir() / sha256[:2] / sha256


def store(data: bytes) -> StoredFile:
    """Check and keep a file; the same bytes are kept once. Raises DocumentRejected with a Russian reason."""
    limit = get_settings().document_max_bytes
    if not data:
        raise DocumentRejected("empty", "Файл пустой.")
    if len(data) > limit:
        raise DocumentRejected("too_large", f"Файл больше {limit // (1024 * 1024)} МБ.")
    content_type = sniff(data)
    if content_type is None:
        raise DocumentRejected("type", "Принимаем только PDF, JPEG и PNG.")
    sha = hashlib.sha256(data).hexdigest()
    final = path_of(sha)
    keep_once(final, data)
    return StoredFile(sha256=sha, size=len(data), content_type=content_type)


def read(sha256: str) -> bytes:
    return path_of(sha256).read_bytes()


def stored(sha256: str) -> StoredFile:
    """A file already kept (by `store`), as the database records it; LookupError when there is none.
    Size and type come from the bytes on disk, never from what a client says about them."""
    try:
        data = read(sha256)
    except (ValueError, OSError):
        raise LookupError("no such stored file") from None
    content_type = sniff(data)
    if content_type is None:  # pragma: no cover - `store` keeps accepted types only
        raise LookupError("no such stored file")
    return StoredFile(sha256=sha256, size=len(data), content_type=content_type)


def may_see(principal: Principal, *, organizer_id: int, order_number: str) -> bool:
    """DESIGN, Security: a claim's documents are for the claim's organizer, staff, and the buyer of that
    order (a buyer token for it); never served without authorization."""
    if principal.kind == "organizer":
        return principal.organizer_id == organizer_id
    if principal.kind == "staff":
        return True
    if principal.kind == "buyer":
        return principal.order_number == order_number
    return False


def _safe_filename(name: str | None, document_id: int, content_type: str) -> str:
    base = Path(name or "").name.replace("\\", "_")
    base = "".join(c for c in base if c.isprintable() and c not in '"<>:/|?*;').strip(" .")[:150]
    return base or f"document-{document_id}{EXTENSIONS.get(content_type, '')}"


def open_for(engine: Engine, principal: Principal, document_id: int) -> tuple[bytes, str, str]:
    """A document's file for a caller allowed to see it: (bytes, content_type, filename).

    LookupError when the document does not exist, has no file, or the caller may not see it (the
    three look the same: nobody learns what exists).
    """
    from models.tables import Claim, Document, Event, Order, Ticket

    document_t, claim_t, ticket_t, order_t, event_t = (t.__table__ for t in (Document, Claim, Ticket, Order, Event))
    with engine.connect() as conn:
        row = conn.execute(
            select(document_t.c.sha256, document_t.c.content_type, document_t.c.filename, event_t.c.organizer_id,
                   order_t.c.number.label("order_number"))
            .join(claim_t, claim_t.c.id == document_t.c.claim_id)
            .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
            .join(order_t, order_t.c.id == ticket_t.c.order_id)
            .join(event_t, event_t.c.id == claim_t.c.event_id)
            .where(document_t.c.id == document_id)
        ).one_or_none()
    if row is None or row.sha256 is None or not may_see(principal, organizer_id=row.organizer_id, order_number=row.order_number):
        raise LookupError(f"document {document_id} not found")
    try:
        data = read(row.sha256)
    except (ValueError, OSError):
        raise LookupError(f"document {document_id}: its file is missing") from None
    content_type = row.content_type or sniff(data) or "application/octet-stream"
    return data, content_type, _safe_filename(row.filename, document_id, content_type)
