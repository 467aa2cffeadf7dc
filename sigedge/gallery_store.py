"""Storage layer of a gallery: the directory, its lock, the SQLite database, the index files.

Layout of a gallery directory::

    gallery.db            SQLite (WAL): the source of truth (writers, samples with their
                          vectors and ink statistics, optional crops, metadata, audit chain head)
    gallery.db-wal/-shm   SQLite's write-ahead log (transient)
    index-<gen>.hnsw      hnswlib index of each writer's mean reference vector: a derived
                          cache, named by the database generation it reflects
                          (``.hnsw.enc`` when encrypted)
    audit.jsonl           hash-chained audit log (see :mod:`sigedge.audit`)
    lock                  lock file: writers hold ``flock(LOCK_EX)`` on it

Every change is one SQLite transaction that also bumps ``generation``. Index files are
written to a temporary name, fsync'ed and renamed, so a reader sees a whole file or none;
an index older than the database is brought up to date from the database when opened
(samples carry the generation that added them, removed writers leave a tombstone, their
row number only, with the generation that removed them).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pickle
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import GalleryError

__all__ = ["GALLERY_FORMAT", "DB_FILE", "INK_TABLE", "INK_TRIGGER", "LOCK_FILE", "FileLock", "Store", "ensure_ink_schema",
           "fsync_dir", "has_table"]

log = logging.getLogger(__name__)

GALLERY_FORMAT = "sigedge-gallery/1"
DB_FILE = "gallery.db"
LOCK_FILE = "lock"
_INDEX_RE = re.compile(r"^index-(\d{12})\.hnsw(\.enc)?$")
_TMP_RE = re.compile(r"^\.index-.*\.tmp$")
_ENC_MAGIC = b"SIGEDGE-HNSW-ENC1"
_OWN_NAMES = {LOCK_FILE, DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS writers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lookup TEXT NOT NULL UNIQUE,      -- the writer id, or its HMAC token when encrypted
    name BLOB NOT NULL,               -- the writer id (UTF-8), encrypted when encrypted
    ref TEXT NOT NULL UNIQUE,         -- random pseudonym used in the audit log
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- also the label in the hnswlib index
    writer INTEGER NOT NULL REFERENCES writers(id),
    generation INTEGER NOT NULL,            -- gallery generation that added (or re-embedded) it
    enrolled REAL NOT NULL,
    vector BLOB NOT NULL                    -- float32 little-endian, encrypted when encrypted
);
CREATE INDEX IF NOT EXISTS samples_writer ON samples(writer);
CREATE INDEX IF NOT EXISTS samples_generation ON samples(generation);
CREATE TABLE IF NOT EXISTS crops (
    sample_id INTEGER PRIMARY KEY REFERENCES samples(id),
    kind TEXT NOT NULL,                     -- 'original' (the bytes given) or 'png'
    data BLOB NOT NULL                      -- encrypted when encrypted
);
CREATE TABLE IF NOT EXISTS tombstones (
    writer INTEGER PRIMARY KEY,             -- a removed writer (only its row number is kept)
    generation INTEGER NOT NULL             -- the generation that removed it
);
CREATE INDEX IF NOT EXISTS tombstones_generation ON tombstones(generation);
"""
# Added after the first galleries were made: a gallery without it is created the first time a
# sample is written; samples enrolled before have no ink statistics (scored by the cosine).
INK_TABLE = """
CREATE TABLE IF NOT EXISTS sample_ink (
    -- ON DELETE CASCADE: an older sigedge, which knows nothing of this table, still erases
    -- a writer's statistics with their samples (and is not stopped by the foreign key)
    sample_id INTEGER PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
    data BLOB NOT NULL                      -- float32 LE ink statistics, encrypted when encrypted
)"""
# A sample re-embedded (its vector rewritten, e.g. by ``reindex`` to another model) loses its
# ink statistics: they were measured on the old preprocessing. In the database rather than in
# the code, so that a sigedge from before the statistics, re-embedding a gallery, drops them
# too instead of leaving them beside the new vectors. A statement of its own: its body has ";".
INK_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS sample_ink_follows_vector AFTER UPDATE OF vector ON samples
BEGIN
    DELETE FROM sample_ink WHERE sample_id = NEW.id;
END"""


def ensure_ink_schema(conn: sqlite3.Connection) -> None:
    """The ink statistics table and its trigger, for galleries made before either (in a write
    transaction)."""
    conn.execute(INK_TABLE)
    conn.execute(INK_TRIGGER)


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def fsync_dir(path: Path) -> None:
    """Make a rename or an unlink in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FileLock:
    """Exclusive ``flock`` on a lock file, re-entrant within one object, with a timeout."""

    def __init__(self, path: Path, timeout: float):
        self.path = Path(path)
        self.timeout = timeout
        self._fd: int | None = None
        self._depth = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting at most ``timeout`` seconds (default: the lock's timeout)."""
        if self._depth:
            self._depth += 1
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise GalleryError(f"{self.path}: cannot open the gallery's lock file ({exc.strerror or exc})") from exc
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise GalleryError(f"{self.path}: cannot lock the gallery ({exc.strerror})") from exc
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise GalleryError(f"{self.path.parent}: the gallery is locked by another process "
                                       f"(waited {self.timeout if timeout is None else timeout:g} s)") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        self._fd = fd
        self._depth = 1

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._depth > 0


class Store:
    """The database connection, the lock and the index files of one gallery directory."""

    def __init__(self, directory: Path, *, create: bool, lock_timeout: float = 60.0, synchronous: str = "FULL"):
        self.dir = Path(directory)
        self.db_path = self.dir / DB_FILE
        if self.dir.exists() and not self.dir.is_dir():
            raise GalleryError(f"{self.dir}: exists and is not a directory")
        if not self.db_path.exists():
            if not create:
                raise GalleryError(f"{self.dir}: no gallery here")
            if self.dir.is_dir() and any(p.name not in _OWN_NAMES for p in self.dir.iterdir()):
                raise GalleryError(f"{self.dir}: directory is not empty and holds no gallery; "
                                   "refusing to create one there")
            try:
                self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # biometric data: owner only
            except OSError as exc:
                raise GalleryError(f"{self.dir}: cannot create the gallery ({exc.strerror or exc})") from exc
        self.lock = FileLock(self.dir / LOCK_FILE, lock_timeout)
        self.synchronous = synchronous
        self.conn = self._connect()
        self.created_now = False

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False,
                                   timeout=self.lock.timeout)
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute(f"PRAGMA busy_timeout={int(self.lock.timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.db_path}: cannot open the gallery database ({exc})") from exc
        return conn

    # -- schema ---------------------------------------------------------------------

    def is_initialised(self) -> bool:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        except sqlite3.DatabaseError as exc:
            if "no such table" in str(exc):
                return False
            raise GalleryError(f"{self.db_path}: not a readable gallery database ({exc})") from exc
        return row is not None

    def initialise(self, meta: dict[str, Any]) -> bool:
        """Create the schema and metadata unless another process already did. Lock held."""
        try:
            mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise GalleryError(f"{self.db_path}: cannot switch the database to WAL mode (got {mode})")
            if self.is_initialised():
                return False
            self.conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            ensure_ink_schema(self.conn)
            self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", list(meta.items()))
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise GalleryError(f"{self.db_path}: cannot create the gallery database ({exc})") from exc
        self.created_now = True
        return True

    # -- transactions ---------------------------------------------------------------

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot of the database."""
        try:
            self.conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.db_path}: cannot read the gallery ({exc})") from exc
        try:
            yield self.conn
        except sqlite3.Error as exc:
            self._rollback()
            raise GalleryError(f"{self.db_path}: cannot read the gallery ({exc})") from exc
        except BaseException:
            self._rollback()
            raise
        else:
            self._rollback()  # nothing to commit in a read transaction

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; the caller must hold :attr:`lock`. Commits on success."""
        if not self.lock.held:
            raise RuntimeError("gallery write without the gallery lock")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.db_path}: cannot change the gallery ({exc})") from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise GalleryError(f"{self.db_path}: cannot change the gallery ({exc})") from exc
        except BaseException:
            self._rollback()
            raise

    def meta(self, conn: sqlite3.Connection | None = None) -> dict[str, Any]:
        c = conn or self.conn
        try:
            return {k: v for k, v in c.execute("SELECT key, value FROM meta")}
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.db_path}: cannot read the gallery metadata ({exc})") from exc

    @staticmethod
    def set_meta(conn: sqlite3.Connection, **values: Any) -> None:
        conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", list(values.items()))

    def generation(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    def checkpoint_truncate(self, attempts: int = 50) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes."""
        for i in range(attempts):
            busy, _log, _done = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return True
            time.sleep(min(0.01 * (i + 1), 0.2))
        log.warning("%s: WAL checkpoint stayed busy (readers open)", self.db_path)
        return False

    def vacuum(self) -> None:
        self.conn.execute("VACUUM")

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:  # pragma: no cover
            pass
        self.lock.release()

    # -- index files ----------------------------------------------------------------

    def index_files(self) -> list[tuple[int, Path]]:
        """(generation, path) of the index files present, newest first."""
        out = []
        try:
            names = os.listdir(self.dir)
        except OSError as exc:
            raise GalleryError(f"{self.dir}: cannot list the gallery ({exc.strerror or exc})") from exc
        for name in names:
            m = _INDEX_RE.match(name)
            if m:
                out.append((int(m.group(1)), self.dir / name))
        return sorted(out, reverse=True)

    def save_index(self, index: Any, generation: int, cipher: Any | None) -> Path:
        """Write the index for ``generation`` atomically and delete every other index file.

        The caller holds the lock. The old files are removed only after the new one is
        durable, so a crash leaves at least one complete index (or none, and the database).
        """
        final = self.dir / f"index-{generation:012d}.hnsw{'.enc' if cipher else ''}"
        tmp = self.dir / f".index-{generation:012d}-{os.getpid()}.tmp"
        try:
            if cipher is None:
                index.save_index(str(tmp))
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            else:
                blob = cipher.encrypt(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL), b"sigedge/index")
                with open(tmp, "wb") as f:
                    f.write(_ENC_MAGIC)
                    f.write(blob)
                    f.flush()
                    os.fsync(f.fileno())
                del blob
            os.replace(tmp, final)
            fsync_dir(self.dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise GalleryError(f"{final}: cannot save the index ({exc.strerror or exc})") from exc
        self.delete_index_files(keep=final)
        return final

    def delete_index_files(self, keep: Path | None = None) -> None:
        """Remove index files other than ``keep`` and leftovers of interrupted saves (lock held)."""
        removed = False
        for name in os.listdir(self.dir):
            p = self.dir / name
            if (_INDEX_RE.match(name) or _TMP_RE.match(name)) and p != keep:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed = True
        if removed:
            fsync_dir(self.dir)

    @staticmethod
    def load_index_file(path: Path, space: str, dim: int, cipher: Any | None) -> Any:
        """Load one index file; raises FileNotFoundError if it vanished, GalleryError if unusable."""
        import hnswlib

        encrypted = path.name.endswith(".enc")
        if encrypted != (cipher is not None):
            raise GalleryError(f"{path.name}: index file encryption does not match the gallery")
        if cipher is None:
            index = hnswlib.Index(space=space, dim=dim)
            try:
                index.load_index(str(path), max_elements=0)
            except RuntimeError as exc:
                if not path.exists():
                    raise FileNotFoundError(str(path)) from exc
                raise GalleryError(f"{path.name}: unreadable index ({exc})") from exc
        else:
            data = path.read_bytes()  # FileNotFoundError propagates
            if not data.startswith(_ENC_MAGIC):
                raise GalleryError(f"{path.name}: not an encrypted sigedge index")
            index = pickle.loads(cipher.decrypt(data[len(_ENC_MAGIC):], b"sigedge/index"))
        if index.dim != dim:
            raise GalleryError(f"{path.name}: index has dimension {index.dim}, the gallery {dim}")
        return index

    def disk_bytes(self) -> int:
        total = 0
        for p in self.dir.iterdir():
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
        return total
