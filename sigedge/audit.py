"""The gallery's audit log: append-only, hash-chained JSON lines.

Each line of ``audit.jsonl`` is one JSON object::

    {"seq": 7, "time": "2026-11-28T10:00:00.123Z", "event": "verify", "writer": "w:3f9a...",
     "model_sha256": "...", "score": 0.71, "threshold": 0.55, "decision": "genuine",
     "prev": "<hash of line 6>", "hash": "<sha256 of this object without 'hash'>"}

``hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the line's
other fields, ``prev`` the hash of the line before (64 zeros for the first line), ``seq``
counts lines from 1. Editing a line breaks its hash; inserting or deleting one breaks the
sequence and the chain. The chain head (last ``seq`` and ``hash``) is also stored in the
gallery's SQLite database, in the same transaction as the change the line records, so
deleting lines from the end, or appending forged ones, is detected too.

Writers appear only as their gallery pseudonym (``w:`` + 16 hex digits, random per
writer, see :meth:`sigedge.gallery.Gallery.writer_ref`); images never appear. Removing a
writer erases the pseudonym's link to the writer id, so the log holds no personal data
of an erased writer while its chain stays verifiable.

Crash safety: the line is first committed to SQLite as "pending", then appended to the
file and fsync'ed, then the pending mark is cleared. A process killed in between leaves a
pending line that the next writer (or ``audit check``) appends, so a crash never looks
like tampering and tampering never looks like a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GalleryError

__all__ = ["AUDIT_FILE", "GENESIS_HASH", "AuditReport", "AuditLog", "line_hash", "make_line", "verify_chain"]

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
GENESIS_HASH = "0" * 64
_TAIL_BYTES = 1 << 16


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def line_hash(entry: dict[str, Any]) -> str:
    """SHA-256 (hex) of an audit entry's canonical JSON, the ``hash`` field left out."""
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def make_line(seq: int, prev: str, event: dict[str, Any]) -> tuple[str, str]:
    """(line text with its newline, its hash) of event number ``seq`` chained after ``prev``."""
    entry = {"seq": int(seq), "time": utc_now()}
    entry.update({k: v for k, v in event.items() if k not in ("seq", "prev", "hash")})
    entry["prev"] = prev
    h = line_hash(entry)
    entry["hash"] = h
    return _canonical(entry).decode("ascii") + "\n", h


@dataclass(frozen=True)
class AuditReport:
    """Result of checking a gallery's audit log."""

    ok: bool
    lines: int  # complete lines read
    head_seq: int  # last sequence number the database records
    reason: str | None = None  # one line, when not ok
    line: int | None = None  # 1-based line number the problem is at, when known
    path: str = ""


def verify_chain(data: bytes, head_seq: int, head_hash: str, path: str = AUDIT_FILE) -> AuditReport:
    """Check the bytes of an audit log against the chain head stored in the database."""

    def bad(reason: str, line: int | None, lines: int) -> AuditReport:
        where = f"{path}: line {line}: " if line is not None else f"{path}: "
        return AuditReport(False, lines, head_seq, where + reason, line, path)

    if data and not data.endswith(b"\n"):
        n = data.count(b"\n") + 1
        return bad("incomplete last line (the log was truncated or edited)", n, n - 1)
    raw_lines = data.split(b"\n")[:-1] if data else []
    prev = GENESIS_HASH
    for i, raw in enumerate(raw_lines, start=1):
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return bad("not a valid JSON object (the line was edited)", i, i - 1)
        if not isinstance(entry, dict):
            return bad("not a JSON object (the line was edited)", i, i - 1)
        if entry.get("seq") != i:
            return bad(f"sequence number is {entry.get('seq')!r}, expected {i} (a line was inserted or deleted)", i, i - 1)
        if entry.get("prev") != prev:
            return bad("does not chain to the line before it (a line before it was edited, inserted or deleted)", i, i - 1)
        try:
            actual = line_hash(entry)
        except (TypeError, ValueError):
            return bad("holds values that cannot be hashed (the line was edited)", i, i - 1)
        if entry.get("hash") != actual:
            return bad("its hash does not match its content (the line was edited)", i, i - 1)
        prev = actual
    n = len(raw_lines)
    if n < head_seq:
        return bad(f"the log ends at line {n} but the gallery database records {head_seq} events "
                   "(lines were deleted from the end)", n + 1, n)
    if n > head_seq:
        return bad(f"line is beyond the last event the gallery database records ({head_seq}); "
                   "lines were appended outside sigedge", head_seq + 1, n)
    if n and prev != head_hash:
        return bad("the last line does not match the chain head stored in the gallery database "
                   "(the log was rewritten)", n, n)
    if n == 0 and head_seq == 0 and head_hash not in ("", GENESIS_HASH):
        return bad("the log is empty but the gallery database records a chain head", None, 0)
    return AuditReport(True, n, head_seq, None, None, path)


class AuditLog:
    """The audit file of one gallery. Every method that writes expects the gallery lock held."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise GalleryError(f"{self.path}: cannot read the audit log ({exc.strerror or exc})") from exc

    def append(self, line: str) -> None:
        """Append one complete line and make it durable."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            data = line.encode("ascii")
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)

    def _last_complete_line(self) -> tuple[dict | None, int, int]:
        """(last complete line parsed or None, offset just after it, file size)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return None, 0, 0
        with open(self.path, "rb") as f:
            start = max(0, size - _TAIL_BYTES)
            f.seek(start)
            tail = f.read()
        end = tail.rfind(b"\n")
        if end < 0:
            return None, start if start else 0, size
        begin = tail.rfind(b"\n", 0, end) + 1
        try:
            entry = json.loads(tail[begin:end].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            entry = None
        return (entry if isinstance(entry, dict) else None), start + end + 1, size

    def recover(self, head_seq: int, head_hash: str, pending_line: str) -> bool:
        """Finish an append interrupted by a crash. Returns True when the pending line is in the log.

        Called with the gallery lock held when the database records ``pending_line`` as
        committed (it is event ``head_seq``) but possibly not yet in the file.
        """
        last, end, size = self._last_complete_line()
        if end < size:
            # A partial line after the last newline: the interrupted append itself.
            log.warning("%s: dropping %d bytes of an interrupted append", self.path, size - end)
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        last_seq = int(last.get("seq", -1)) if last else 0
        if last is not None and last_seq == head_seq and last.get("hash") == head_hash:
            return True
        if (last is None and end == 0 and head_seq == 1) or (last is not None and last_seq == head_seq - 1):
            log.info("%s: appending event %d recorded before a crash", self.path, head_seq)
            self.append(pending_line)
            return True
        log.error("%s: cannot restore pending event %d: the log ends at event %s", self.path, head_seq, last_seq)
        return False
