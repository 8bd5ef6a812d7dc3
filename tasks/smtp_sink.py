"""A local SMTP sink (aiosmtpd): every message it receives becomes an .eml file in a folder.

Run in the foreground (used by `make up`)::

    python -m tasks.smtp_sink --port 8025 --dir var/mail
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import socket
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (aiosmtpd's Controller needs a concrete one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    path: Path
    mail_from: str
    rcpt_tos: list[str]
    message_id: str | None


@dataclass
class FolderHandler:
    """aiosmtpd handler: one .eml per message, named <counter>-<hash of Message-ID>.eml."""

    folder: Path
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # continue the numbering of an existing folder (var/mail survives restarts)
        self._counter = itertools.count(len(list(self.folder.glob("*.eml"))) + 1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        # compat32: the sink only needs the Message-ID, and the modern parser costs twice as much
        headers = BytesParser(policy=policy.compat32).parsebytes(content, headersonly=True)
        message_id = headers.get("Message-ID")
        digest = hashlib.sha256((message_id or content.decode("latin-1")).encode()).hexdigest()[:16]
        with self._lock:
            name = f"{next(self._counter):06d}-{digest}.eml"
        path = self.folder / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, path)  # readers never see half a message
        self.received.append(Received(path, envelope.mail_from, list(envelope.rcpt_tos), message_id))
        return "250 Message accepted for delivery"


@dataclass
class SinkHandle:
    controller: Controller
    handler: FolderHandler
    host: str
    port: int

    @property
    def folder(self) -> Path:
        return self.handler.folder

    @property
    def received(self) -> list[Received]:
        return list(self.handler.received)

    def messages(self) -> list[EmailMessage]:
        """Every message in the folder, oldest first, parsed."""
        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(p.read_bytes()) for p in sorted(self.folder.glob("*.eml"))]  # type: ignore[misc]

    def stop(self) -> None:
        self.controller.stop()


def start_sink(host: str = "127.0.0.1", port: int = 0, folder: str | Path = "var/mail") -> SinkHandle:
    """Start the sink in a background thread; port 0 picks a free port."""
    handler = FolderHandler(Path(folder))
    if port == 0:
        port = free_port(host)
    controller = Controller(handler, hostname=host, port=port, enable_SMTPUTF8=True)
    controller.start()
    return SinkHandle(controller=controller, handler=handler, host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.smtp_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", default="var/mail", help="folder for the .eml files")
    args = parser.parse_args(argv)
    sink = start_sink(args.host, args.port, args.dir)
    print(f"SMTP sink on {sink.host}:{sink.port}, writing to {sink.folder.resolve()} (Ctrl+C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
