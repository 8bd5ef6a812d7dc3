"""Document files: content-addressed under the data directory, outside any web root; metadata in `document`.

A file is accepted when it is a PDF, JPEG or PNG by its content (its magic bytes, read by the `filetype`
library, not the name or the declared type) and no larger than `document_max_bytes`. It is stored once as
`<data_dir>/documents/<sha256[:2]>/<sha256>` (written to a temporary name, then renamed: never half a
file under its final name). Serving a file is the caller's job, after it checked who asks.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import filetype

from models.settings import get_settings

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
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return StoredFile(sha256=sha, size=len(data), content_type=content_type)


def read(sha256: str) -> bytes:
    return path_of(sha256).read_bytes()
