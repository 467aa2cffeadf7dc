"""A persistent gallery of enrolled writers: 1:N identification and 1:1 verification.

>>> from sigedge import Gallery
>>> with Gallery("bank-gallery") as g:                       # opens or creates it
...     g.enroll("alice", ["a1.png", "a2.png", "a3.png"])
...     g.identify("query.png", k=5)                         # [Match(writer_id='alice', ...)]
...     g.verify("alice", "query.png").genuine
...     g.remove("alice")                                    # erased for real

Design (details in :mod:`sigedge.gallery_store`):

* SQLite (WAL) is the source of truth: writers, their reference vectors (several per
  writer), optionally the images they came from, the model they were made with, and the
  audit chain head. Every change is one transaction, so a process killed at any instant
  leaves every change that returned and none that did not.
* An hnswlib index (inner product) over each writer's mean reference vector serves
  identification: with L2-normalised embeddings, the inner product with that mean is
  the mean of the cosine similarities to the writer's references, i.e. verification's
  fused score before its per-writer normalisation, so writers (not samples) are ranked
  directly. The index is a cache: saved
  atomically under a file name that carries the database generation it reflects, and
  brought up to date from the database when it lags behind (another process wrote, or
  a process died before saving it). Galleries of up to ``exact_search_limit`` writers
  (20 000 by default) are searched exactly instead, over the same mean vectors in memory.
* Writers are serialised by ``flock`` on the gallery's lock file; readers use SQLite
  snapshots and never need it.
* ``remove`` erases: rows deleted with ``secure_delete``, the write-ahead log checkpointed
  and truncated, the database vacuumed, and the writer's vector overwritten in the index
  before it is saved and the old index files deleted.
* With a key, vectors, ink statistics, images and writer ids are encrypted (AES-GCM); writer ids are found
  by HMAC token; the index file is encrypted too. (Counts and enrolment times are not.)
* Every enrolment, verification, identification and removal is appended to a
  hash-chained audit log (:mod:`sigedge.audit`).

A :class:`Gallery` object is safe to share between threads (calls are serialised) but not
across ``fork``; open one per process.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence, Union

import numpy as np

from .audit import AUDIT_FILE, GENESIS_HASH, AuditLog, AuditReport, make_line, verify_chain
from .errors import GalleryError, MissingCleanerError, SigedgeError, UsageError
from .gallery_store import DB_FILE, GALLERY_FORMAT, Store, ensure_ink_schema, has_table
from .imageio import ImageInput, load_image, read_image_bytes
from .pipeline import VerifyResult
from .scoring import INK_STATISTICS, Fusion

__all__ = [
    "Gallery",
    "GalleryOptions",
    "EnrollResult",
    "Match",
    "WriterInfo",
    "GalleryInfo",
    "ReindexResult",
    "AuditReport",
    "Embedder",
    "check_audit",
    "describe_images",
    "embed_images",
    "ink_layouts_compatible",
    "pipeline_for_gallery",
    "recorded_cleaning",
    "reindex_gallery",
    "verify_in_gallery",
]

log = logging.getLogger(__name__)

_SPACE = "ip"  # embeddings are L2-normalised: inner product is cosine similarity
_MAX_WRITER_ID = 256
KeyArg = Union[bytes, bytearray, str, None]


class Embedder(Protocol):
    """What a gallery needs from a model: :class:`sigedge.Pipeline` provides it."""

    @property
    def model_sha256(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, image: ImageInput) -> np.ndarray: ...

    def verify_embeddings(self, query: np.ndarray, references: np.ndarray) -> VerifyResult: ...

    # Optional, as :class:`sigedge.Pipeline` has them: ``describe(image)`` (an object with
    # ``embedding`` and ``ink``), with which the gallery stores each sample's ink statistics;
    # ``describe_query(image)`` and ``verify_features(queries, refs, reference_ink)``, with
    # which it verifies a query at the pipeline's rotations and with its learned scorer;
    # ``ink_layout`` (a string naming what an ink vector holds), which the gallery records so
    # that vectors measured otherwise are not compared. Without them, by the embeddings alone.


@dataclass(frozen=True)
class GalleryOptions:
    """How a gallery searches, stores and logs. Index shape (``M``, ``ef_construction``)
    applies when the index is (re)built; the rest to the open gallery."""

    #: Score a writer needs for :meth:`Gallery.identify` to accept it; None takes the model
    #: bundle's calibrated identification threshold, else its plain cosine's ``far_random_1pct``
    #: (``verification.thresholds``, or ``verification.cosine.thresholds`` in a bundle with a
    #: learned scorer).
    identify_threshold: float | None = None
    #: How a writer's similarities become its score in identify; None: the bundle's fusion.
    identify_fusion: Fusion | None = None
    #: With a fusion other than the mean: writers fetched from the index per identify and
    #: re-scored on all their references; None: ``max(10 * k, 50)``. (The index holds each
    #: writer's mean reference vector, so with mean fusion its ranking is already exact.)
    candidates: int | None = None
    #: Up to this many writers, identify searches every writer's mean vector exactly
    #: (numpy); above it, the hnswlib index (approximate; see benchmarks/README-gallery.md).
    exact_search_limit: int = 20_000
    #: hnswlib graph degree and build-time search width.
    M: int = 32
    ef_construction: int = 200
    #: hnswlib query-time search width (raised to the number of writers asked for when smaller).
    ef_search: int = 256
    #: Index capacity allocated at first; it grows by doubling.
    initial_capacity: int = 1024
    #: Save the index file after this many unsaved changes; None: when the unsaved
    #: changes reach 1% of the gallery or 5000 samples (and always on remove).
    index_save_every: int | None = None
    #: Record events in the audit log; ``audit_reads`` covers verify and identify.
    audit: bool = True
    audit_reads: bool = True
    #: Seconds to wait for another process's write before failing.
    lock_timeout: float = 60.0
    #: SQLite durability: FULL survives power loss, NORMAL only process crashes.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: Threads hnswlib uses.
    threads: int = 1
    #: Rebuild the index when this share of its elements are removed ones.
    compact_deleted_fraction: float = 0.25


@dataclass(frozen=True)
class EnrollResult:
    writer_id: str
    added: int  # samples added by this call
    samples: int  # samples of the writer now
    sample_ids: tuple[int, ...]
    new_writer: bool
    crops_kept: bool
    model_sha256: str


@dataclass(frozen=True)
class Match:
    """One candidate writer of an identification, best first."""

    writer_id: str
    score: float  # fused cosine similarity to the writer's references (verify's, before normalisation)
    accepted: bool  # score >= threshold: the query is attributed to this writer
    threshold: float
    references: int  # reference samples of the writer
    rank: int  # 1 = best

    @property
    def known(self) -> bool:
        """Alias of :attr:`accepted` (open-set identification: a known writer)."""
        return self.accepted


@dataclass(frozen=True)
class WriterInfo:
    writer_id: str
    samples: int
    first_enrolled: str  # UTC ISO 8601
    last_enrolled: str
    ref: str  # pseudonym used in the audit log


@dataclass(frozen=True)
class GalleryInfo:
    path: str
    writers: int
    samples: int
    crops: int  # samples whose image is kept (needed by reindex)
    model_sha256: str
    model_name: str
    model_version: str
    dim: int
    encrypted: bool
    created: str
    generation: int
    index_generation: int | None  # generation of the saved index file (None: none saved)
    index_elements: int
    index_deleted: int
    disk_bytes: int
    audit_events: int
    hnsw: dict = field(default_factory=dict)
    #: how the references were cleaned (:attr:`Pipeline.cleaning`; "" for galleries made
    #: before galleries recorded it, which were cleaned classically)
    cleaning: str = ""
    #: how the references' ink vectors were measured (:attr:`Pipeline.ink_layout`; "" for
    #: galleries made before galleries recorded it)
    ink_layout: str = ""


@dataclass(frozen=True)
class ReindexResult:
    samples: int
    previous_model_sha256: str
    model_sha256: str
    changed: bool
    seconds: float
    #: with the model unchanged: samples whose ink statistics were measured from their kept
    #: image (enrolled before galleries kept them), and those left without (no kept image)
    ink_measured: int = 0
    ink_missing: int = 0
    #: how the references were cleaned before and after (:attr:`GalleryInfo.cleaning`)
    previous_cleaning: str = ""
    cleaning: str = ""


def _stored_cleaning(recorded: Any) -> str:
    """A gallery's recorded cleaning, for comparing with :attr:`Pipeline.cleaning`: no record
    (a gallery made before galleries kept one, when the CLI only cleaned classically) reads as
    ``classic``."""
    return str(recorded or "") or "classic"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(t)))


def _check_writer_id(writer_id: Any) -> str:
    if not isinstance(writer_id, str):
        raise UsageError(f"a writer id is text, not {type(writer_id).__name__}")
    if not writer_id.strip():
        raise UsageError("a writer id cannot be empty")
    if len(writer_id) > _MAX_WRITER_ID:
        raise UsageError(f"a writer id is at most {_MAX_WRITER_ID} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in writer_id):
        raise UsageError("a writer id cannot hold control characters")
    try:
        writer_id.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("a writer id must be valid Unicode text") from None
    return writer_id


def _as_image_list(images: Any) -> list:
    if isinstance(images, (str, bytes, bytearray, memoryview, np.ndarray, os.PathLike)):
        return [images]
    return list(images)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)


def _load_key(key: KeyArg) -> bytes | None:
    from . import crypto  # cheap: cryptography itself is imported only when a key is used

    if key is None:
        return crypto.key_from_env()
    return crypto.parse_key(key)


class Gallery:
    """A directory holding enrolled writers' reference embeddings.

    Args:
        path: gallery directory; created (with its parents) when missing and ``create``.
        pipeline: the model; None loads the bundled one (:class:`sigedge.Pipeline`), cleaning
            as the gallery recorded its references were cleaned (:func:`pipeline_for_gallery`).
        key: 32-byte key (raw, hex or base64) to create or open an encrypted gallery;
            None reads ``SIGEDGE_GALLERY_KEY`` when set.
        create: create the gallery when there is none (else :class:`GalleryError`).
        keep_crops: store each enrolled image (needed to :func:`reindex_gallery` later).
        options: :class:`GalleryOptions`.

    Raises :class:`GalleryError` when the directory is not a gallery, the key is missing
    or wrong, or the gallery was made with another model (run ``sigedge reindex``).
    """

    def __init__(self, path: str | os.PathLike, pipeline: Embedder | None = None, *, key: KeyArg = None,
                 create: bool = True, keep_crops: bool = False, options: GalleryOptions | None = None,
                 _check_model: bool = True):
        self.path = Path(os.fsdecode(path))
        self.options = options or GalleryOptions()
        self.keep_crops = bool(keep_crops)
        self._mutex = threading.RLock()
        self._closed = True
        if pipeline is None:
            pipeline = pipeline_for_gallery(self.path)
        self.pipeline: Embedder = pipeline
        self._dim = int(pipeline.dim)
        self._cipher = None
        self._cleaning_mismatch: tuple[str, str] | None = None
        self._index: Any = None
        self._index_gen = -1
        self._store = Store(self.path, create=create, lock_timeout=self.options.lock_timeout,
                            synchronous=self.options.synchronous)
        self._audit = AuditLog(self.path / AUDIT_FILE)
        self._closed = False
        try:
            self._open(_load_key(key), create, _check_model)
        except BaseException:
            self._closed = True
            self._store.close()
            raise

    # ------------------------------------------------------------------ opening

    def _open(self, key: bytes | None, create: bool, check_model: bool) -> None:
        if not self._store.is_initialised():
            if not create:
                raise GalleryError(f"{self.path}: no gallery here")
            with self._store.lock.hold():
                self._create(key)
        meta = self._store.meta()
        if meta.get("format") != GALLERY_FORMAT:
            raise GalleryError(f"{self.path}: gallery format {meta.get('format')!r} is not {GALLERY_FORMAT!r}")
        self._setup_cipher(meta, key)
        if check_model:
            self._check_model(meta)
        self._model_guard = check_model
        self._stored_dim = int(meta["dim"])
        self._load_index()
        if meta.get("audit_pending") or int(meta.get("erase_pending") or 0):
            with self._mutex, self._store.lock.hold():
                self._recover_locked()

    def _create(self, key: bytes | None) -> None:
        from . import crypto

        salt = secrets.token_bytes(16)
        meta: dict[str, Any] = {
            "format": GALLERY_FORMAT,
            "created": time.time(),
            "model_sha256": self.pipeline.model_sha256,
            "cleaning": self._cleaning(),
            "ink_layout": self._ink_layout(),
            "model_name": self._bundle_attr("name"),
            "model_version": self._bundle_attr("version"),
            "dim": self._dim,
            "space": _SPACE,
            "encrypted": 1 if key is not None else 0,
            "salt": salt.hex(),
            "key_check": crypto.GalleryCipher(key, salt).key_check() if key is not None else b"",
            "generation": 0,
            "rebuild_generation": 0,
            "erase_pending": 0,
            "audit_seq": 0,
            "audit_hash": GENESIS_HASH,
            "audit_pending": "",
            "hnsw_M": int(self.options.M),
            "hnsw_ef_construction": int(self.options.ef_construction),
        }
        if self._store.initialise(meta):
            log.info("created gallery %s (model %s, dim %d, %s)", self.path, meta["model_sha256"][:12],
                     self._dim, "encrypted" if key is not None else "not encrypted")
            if self.options.audit:
                with self._store.write() as conn:
                    self._audit_in_txn(conn, {"event": "create", "model_sha256": meta["model_sha256"],
                                              "dim": self._dim, "encrypted": key is not None})
                self._flush_audit()

    def _cleaning(self) -> str:
        return str(getattr(self.pipeline, "cleaning", "") or "")

    def _ink_layout(self) -> str:
        return str(getattr(self.pipeline, "ink_layout", "") or "")

    def _ink_stale(self, conn) -> bool:
        """Whether the stored ink vectors were measured another way than the pipeline measures
        them (another contour hinge): then only their ink statistics are comparable. A layout
        that extends the other (``statistics`` and ``statistics+hinge:…``) is compatible: the
        shorter vectors are what the length checks handle. A gallery that recorded no layout
        (made before galleries did) is taken to match, as it was."""
        return not ink_layouts_compatible(self._recorded_ink_layout(conn), self._ink_layout())

    @staticmethod
    def _recorded_ink_layout(conn) -> str:
        """The layout the gallery recorded for its ink vectors ("" where it recorded none)."""
        row = conn.execute("SELECT value FROM meta WHERE key='ink_layout'").fetchone()
        return str(row[0] or "") if row else ""

    def _ensure_ink_layout_in_txn(self, conn) -> None:
        """Refuse to store ink vectors beside others measured another way (one gallery, one
        layout; ``reindex`` re-measures them). A gallery without stored ink takes the new one."""
        layout = self._ink_layout()
        if not layout:
            return
        recorded = self._recorded_ink_layout(conn)
        if not ink_layouts_compatible(recorded, layout) and has_table(conn, "sample_ink") and \
                conn.execute("SELECT COUNT(*) FROM sample_ink").fetchone()[0]:
            raise GalleryError(f"{self.path}: its references' ink was measured as {recorded!r}, this bundle measures "
                               f"{layout!r}; re-measure them first (`sigedge reindex` measures those with a kept "
                               "image again and keeps only the ink statistics of the others, whose writers then "
                               "verify by the cosine until re-enrolled)")
        Store.set_meta(conn, ink_layout=layout)

    def _bundle_attr(self, name: str) -> str:
        bundle = getattr(self.pipeline, "bundle", None)
        return str(getattr(bundle, name, "") or "")

    def _setup_cipher(self, meta: dict, key: bytes | None) -> None:
        encrypted = bool(int(meta.get("encrypted") or 0))
        if not encrypted:
            if key is not None:
                raise GalleryError(f"{self.path}: the gallery is not encrypted, but a key was given "
                                   "(key=, --key-file or SIGEDGE_GALLERY_KEY); open it without one")
            return
        if key is None:
            raise GalleryError(f"{self.path}: the gallery is encrypted: give its key "
                               "(--key-file or SIGEDGE_GALLERY_KEY)")
        from .crypto import GalleryCipher

        cipher = GalleryCipher(key, bytes.fromhex(str(meta["salt"])))
        if not cipher.matches(bytes(meta.get("key_check") or b"")):
            raise GalleryError(f"{self.path}: wrong key for this encrypted gallery")
        self._cipher = cipher

    def _check_model(self, meta: dict) -> None:
        stored = str(meta.get("model_sha256"))
        if stored != self.pipeline.model_sha256 or int(meta.get("dim", -1)) != self._dim:
            name = " ".join(x for x in (str(meta.get("model_name") or ""), str(meta.get("model_version") or "")) if x)
            raise GalleryError(
                f"{self.path}: the gallery was enrolled with model {stored[:12]}"
                f"{f' ({name})' if name else ''}, but the loaded model is {self.pipeline.model_sha256[:12]}: "
                f"run `sigedge reindex {self.path}` to re-embed its references")
        stored_cleaning, cleaning = _stored_cleaning(meta.get("cleaning")), self._cleaning()
        # said once, at the first query: the vectors are still comparable (same model), so a
        # warning, not a refusal; enrolling is refused (_ensure_cleaning_in_txn)
        self._cleaning_mismatch = (stored_cleaning, cleaning) if cleaning and stored_cleaning != cleaning else None

    def _warn_cleaning_mismatch(self) -> None:
        if self._cleaning_mismatch is None:
            return
        stored, cleaning = self._cleaning_mismatch
        self._cleaning_mismatch = None
        log.warning("%s: the references were cleaned %r, this query %r; scores mix the two "
                    "(`sigedge reindex --cleaner M` re-embeds the references another way)", self.path, stored, cleaning)

    # ------------------------------------------------------------------ encryption helpers

    def _seal(self, data: bytes, purpose: bytes) -> bytes:
        return self._cipher.encrypt(data, purpose) if self._cipher is not None else data

    def _open_blob(self, data: bytes, purpose: bytes) -> bytes:
        return self._cipher.decrypt(data, purpose) if self._cipher is not None else bytes(data)

    def _lookup(self, writer_id: str) -> str:
        return self._cipher.lookup_token(writer_id) if self._cipher is not None else writer_id

    def _vector(self, blob: bytes, writer_row: int) -> np.ndarray:
        raw = self._open_blob(blob, b"sigedge/vector|%d" % writer_row)
        v = np.frombuffer(raw, dtype="<f4")
        if v.shape != (self._stored_dim,):
            raise GalleryError(f"{self.path}: a stored vector has {v.size} values, expected {self._stored_dim}")
        return v

    def _writer_name(self, blob: bytes) -> str:
        return self._open_blob(blob, b"sigedge/writer-name").decode("utf-8")

    # ------------------------------------------------------------------ in-memory index

    def _new_index(self, capacity: int, meta: dict | None = None):
        import hnswlib

        meta = meta or {}
        index = hnswlib.Index(space=_SPACE, dim=self._stored_dim)
        index.init_index(max_elements=max(int(capacity), 16),
                         ef_construction=int(meta.get("hnsw_ef_construction") or self.options.ef_construction),
                         M=int(meta.get("hnsw_M") or self.options.M))
        return index

    def _reset_maps(self) -> None:
        # Each writer's mean vector, also kept in a matrix for exact search of small galleries.
        self._means = np.zeros((64, self._stored_dim), dtype=np.float32)
        self._mean_row = np.full(64, -1, dtype=np.int64)  # writer row of each matrix slot (-1: free)
        self._mean_slot: dict[int, int] = {}
        self._free_slots: list[int] = []
        self._slots_used = 0
        self._writer_names: dict[int, str] = {}
        self._writer_refs: dict[int, str] = {}
        self._writer_rows: dict[str, int] = {}
        self._writer_counts: dict[int, int] = {}
        self._max_writer_row = 0

    @property
    def _live(self) -> int:
        """Writers in the index."""
        return len(self._writer_counts)

    def _map_writer(self, row: int, name_blob: bytes, ref: str) -> None:
        name = self._writer_name(name_blob)
        self._writer_names[row] = name
        self._writer_refs[row] = ref
        self._writer_rows[name] = row
        self._max_writer_row = max(self._max_writer_row, row)

    def _unmap_writer(self, row: int) -> None:
        name = self._writer_names.pop(row, None)
        self._writer_refs.pop(row, None)
        self._writer_counts.pop(row, None)
        if name is not None and self._writer_rows.get(name) == row:
            del self._writer_rows[name]

    def _index_add(self, labels: list[int], vectors: np.ndarray) -> None:
        """Add or update writers' mean vectors in the index and the matrix."""
        if not labels:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        need = self._index.element_count + len(labels)
        cap = self._index.get_max_elements()
        if need > cap:
            self._index.resize_index(max(need, 2 * cap))
        self._index.add_items(vectors, np.asarray(labels, dtype=np.int64), num_threads=self.options.threads)
        self._set_means(labels, vectors)

    def _set_means(self, labels: list[int], vectors: np.ndarray) -> None:
        for row, v in zip(labels, vectors):
            slot = self._mean_slot.get(row)
            if slot is None:
                if self._free_slots:
                    slot = self._free_slots.pop()
                else:
                    slot = self._slots_used
                    self._slots_used += 1
                    if slot >= len(self._means):
                        grow = max(2 * len(self._means), slot + 1)
                        self._means = np.vstack([self._means, np.zeros((grow - len(self._means), self._stored_dim),
                                                                        dtype=np.float32)])
                        self._mean_row = np.concatenate([self._mean_row,
                                                         np.full(grow - len(self._mean_row), -1, dtype=np.int64)])
                self._mean_slot[row] = slot
                self._mean_row[slot] = row
            self._means[slot] = v

    def _index_erase(self, label: int) -> bool:
        """Overwrite a writer's vector with zeros, then mark it deleted. False if absent."""
        slot = self._mean_slot.pop(label, None)
        if slot is not None:
            self._means[slot] = 0.0
            self._mean_row[slot] = -1
            self._free_slots.append(slot)
        try:
            self._index.get_items([label])
        except RuntimeError:
            return False  # not in the index, or already erased and deleted
        self._index.add_items(np.zeros((1, self._stored_dim), dtype=np.float32), [label], num_threads=1)
        self._index.mark_deleted(label)
        return True

    def _means_from_index(self) -> None:
        """Fill the matrix from a loaded index file (its live writers)."""
        rows = sorted(self._writer_counts)
        for i in range(0, len(rows), 8192):
            part = rows[i:i + 8192]
            present = []
            for r in part:
                try:
                    present.append((r, self._index.get_items([r], return_type="numpy")[0]))
                except RuntimeError:
                    pass  # not in this file: the catch-up adds it
            if present:
                self._set_means([r for r, _ in present], np.stack([v for _, v in present]))

    def _load_index(self) -> None:
        """Load the newest usable index file and bring it up to the database's generation."""
        for _attempt in range(8):
            with self._store.read() as conn:
                meta = self._store.meta(conn)
                gen, rebuild_gen = int(meta["generation"]), int(meta["rebuild_generation"])
                files = self._store.index_files()
                if files and files[0][0] > gen:
                    continue  # a newer index appeared after our snapshot began: take a new one
                loaded = None
                vanished = False
                for file_gen, path in files:
                    if file_gen < rebuild_gen:
                        break
                    try:
                        loaded = (file_gen, self._store.load_index_file(path, _SPACE, self._stored_dim, self._cipher))
                        break
                    except FileNotFoundError:
                        vanished = True
                        break
                    except GalleryError as exc:
                        log.warning("%s: ignoring index file: %s", self.path, exc)
                if vanished:
                    continue
                if loaded is None:
                    self._rebuild_in_snapshot(conn, meta)
                else:
                    self._index = loaded[1]
                    self._index.set_num_threads(self.options.threads)
                    self._reset_maps()
                    self._map_all(conn)
                    self._means_from_index()
                    self._apply_changes(conn, loaded[0])
                    self._index_gen = gen
                    log.debug("%s: index of generation %d loaded, now at %d", self.path, loaded[0], gen)
                return
        with self._store.read() as conn:
            self._rebuild_in_snapshot(conn, self._store.meta(conn))

    def _map_all(self, conn) -> None:
        for row, name, ref in conn.execute("SELECT id, name, ref FROM writers"):
            self._map_writer(row, name, ref)
        for row, n in conn.execute("SELECT writer, COUNT(*) FROM samples GROUP BY writer"):
            self._writer_counts[int(row)] = int(n)

    def _rebuild_in_snapshot(self, conn, meta: dict) -> None:
        """Build the index from every vector in the database snapshot."""
        t0 = time.perf_counter()
        n = conn.execute("SELECT COUNT(*) FROM writers").fetchone()[0]
        self._index = self._new_index(max(self.options.initial_capacity, int(n * 1.25) + 16), meta)
        self._index.set_num_threads(self.options.threads)
        self._reset_maps()
        for row, name, ref in conn.execute("SELECT id, name, ref FROM writers"):
            self._map_writer(row, name, ref)
        self._add_centroids(conn.execute("SELECT writer, vector FROM samples ORDER BY writer, id"))
        self._index_gen = int(meta["generation"])
        log.info("%s: index rebuilt from the database (%d writers, %.1f s)", self.path, n, time.perf_counter() - t0)

    def _add_centroids(self, cursor, batch: int = 4096) -> int:
        """Index each writer's mean reference vector, from (writer, vector) rows sorted by writer.

        The mean of a writer's similarities to a query is the query's inner product with
        the writer's mean vector, so this index ranks writers exactly as verification's
        mean fusion scores them (before verification's per-writer normalisation). Returns the number of writers indexed."""
        rows: list[int] = []
        centroids: list[np.ndarray] = []
        done = 0
        for writer, group in itertools.groupby(cursor, key=lambda r: int(r[0])):
            vectors = np.stack([self._vector(blob, writer) for _, blob in group])
            rows.append(writer)
            centroids.append(vectors.mean(axis=0, dtype=np.float64).astype(np.float32))
            self._writer_counts[writer] = len(vectors)
            done += 1
            if len(rows) >= batch:
                self._index_add(rows, np.stack(centroids))
                rows, centroids = [], []
        if rows:
            self._index_add(rows, np.stack(centroids))
        return done

    def _apply_changes(self, conn, since: int) -> None:
        """Apply the removals and enrolments made after generation ``since`` (one snapshot)."""
        erased = 0
        for (row,) in conn.execute("SELECT writer FROM tombstones WHERE generation > ?", (since,)).fetchall():
            if self._index_erase(int(row)):
                erased += 1
            self._unmap_writer(int(row))
        for row, name, ref in conn.execute("SELECT id, name, ref FROM writers WHERE id > ?",
                                           (self._max_writer_row,)).fetchall():
            self._map_writer(row, name, ref)
        # (not SELECT DISTINCT: SQLite would scan the whole writer index for it)
        touched = sorted({int(w) for (w,) in conn.execute(
            "SELECT writer FROM samples WHERE generation > ?", (since,)).fetchall()})
        updated = 0
        for i in range(0, len(touched), 500):
            part = touched[i:i + 500]
            marks = ",".join("?" * len(part))
            updated += self._add_centroids(conn.execute(
                f"SELECT writer, vector FROM samples WHERE writer IN ({marks}) ORDER BY writer, id", part))
        if erased or updated:
            log.debug("%s: index caught up from generation %d: %d writers updated, %d erased",
                      self.path, since, updated, erased)

    def _refresh(self) -> None:
        """Bring the in-memory index up to the database's latest generation."""
        with self._store.read() as conn:
            row = dict(conn.execute("SELECT key, value FROM meta WHERE key IN "
                                    "('generation', 'rebuild_generation', 'model_sha256', 'dim')").fetchall())
            gen = int(row["generation"])
            if gen == self._index_gen:
                return
            if self._model_guard and (row["model_sha256"] != self.pipeline.model_sha256
                                      or int(row["dim"]) != self._dim):
                raise GalleryError(f"{self.path}: the gallery was re-indexed with another model "
                                   f"({str(row['model_sha256'])[:12]}) while open: reopen it with that model")
            if self._index_gen < int(row["rebuild_generation"]):
                self._rebuild_in_snapshot(conn, self._store.meta(conn))
            else:
                self._apply_changes(conn, self._index_gen)
                self._index_gen = gen

    @property
    def _index_deleted(self) -> int:
        return int(self._index.element_count) - self._live if self._index is not None else 0

    # ------------------------------------------------------------------ locked operations

    def _audit_in_txn(self, conn, event: dict[str, Any]) -> None:
        """Record an event as the new chain head, pending until it is in the file."""
        head = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('audit_seq', 'audit_hash')").fetchall())
        seq = int(head.get("audit_seq") or 0) + 1
        line, h = make_line(seq, str(head.get("audit_hash") or GENESIS_HASH), event)
        Store.set_meta(conn, audit_seq=seq, audit_hash=h, audit_pending=line)
        self._pending_line = line

    def _flush_audit(self) -> None:
        line = getattr(self, "_pending_line", None)
        if not line:
            return
        self._pending_line = None
        self._audit.append(line)
        with self._store.write() as conn:
            Store.set_meta(conn, audit_pending="")

    def _recover_locked(self) -> None:
        """Finish what a killed process left: an audit line, an erasure. Lock held."""
        meta = self._store.meta()
        pending = str(meta.get("audit_pending") or "")
        if pending:
            self._audit.recover(int(meta["audit_seq"]), str(meta["audit_hash"]), pending)
            with self._store.write() as conn:
                Store.set_meta(conn, audit_pending="")
        if int(meta.get("erase_pending") or 0):
            log.info("%s: finishing an interrupted erasure", self.path)
            self._finish_erasure_locked()

    def _ensure_model_in_txn(self, conn) -> None:
        row = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('model_sha256', 'dim')").fetchall())
        if row.get("model_sha256") != self.pipeline.model_sha256 or int(row.get("dim", -1)) != self._dim:
            raise GalleryError(f"{self.path}: the gallery was re-indexed with another model while open: reopen it")

    def _ensure_cleaning_in_txn(self, conn) -> None:
        """Refuse to enrol references cleaned otherwise than the ones stored: one gallery, one
        cleaning (it records one, and reindex re-embeds by it). An empty gallery takes the new one."""
        cleaning = self._cleaning()
        if not cleaning:  # an embedder that does not say how it cleans
            return
        row = conn.execute("SELECT value FROM meta WHERE key='cleaning'").fetchone()
        recorded = str(row[0] or "") if row else ""
        stored = _stored_cleaning(recorded)
        if stored == cleaning:
            if not recorded:
                Store.set_meta(conn, cleaning=cleaning)
            return
        if conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]:
            old, new = stored.split(":"), cleaning.split(":")
            if old[0] == new[0] == "learned" and old[2:] == new[2:]:
                hint = ("the bundle's learned cleaner is another than the one they were cleaned with: re-embed them "
                        "with it first (`sigedge reindex`, for images kept with --keep-crops)")
            else:
                hint = ("enrol the way they were (the CLI does unless --cleaner says otherwise), or re-embed them "
                        "first (`sigedge reindex --cleaner M`, for images kept with --keep-crops)")
            raise GalleryError(f"{self.path}: its references were cleaned {stored!r}, these {cleaning!r}; {hint}")
        Store.set_meta(conn, cleaning=cleaning)

    def _unsaved_changes(self) -> tuple[int, int | None]:
        files = self._store.index_files()
        file_gen = files[0][0] if files else None
        since = -1 if file_gen is None else file_gen
        with self._store.read() as conn:
            n = conn.execute("SELECT COUNT(*) FROM samples WHERE generation > ?", (since,)).fetchone()[0]
            n += conn.execute("SELECT COUNT(*) FROM tombstones WHERE generation > ?", (since,)).fetchone()[0]
        return int(n), file_gen

    def _maybe_save_locked(self, force: bool = False) -> None:
        """Save the index file if the policy says so. Lock held; the index is up to date."""
        self._refresh()
        unsaved, file_gen = self._unsaved_changes()
        if file_gen == self._index_gen and not force:
            return
        every = self.options.index_save_every
        due = (force or file_gen is None or file_gen > self._index_gen or
               (unsaved >= every if every else (unsaved * 100 >= max(self._live, 1) or unsaved >= 5000)))
        if due:
            t0 = time.perf_counter()
            self._store.save_index(self._index, self._index_gen, self._cipher)
            log.debug("%s: index of generation %d saved (%.2f s)", self.path, self._index_gen,
                      time.perf_counter() - t0)

    def _finish_erasure_locked(self) -> None:
        self._refresh()
        total = int(self._index.element_count)
        if total and self._index_deleted > self.options.compact_deleted_fraction * total:
            with self._store.read() as conn:
                self._rebuild_in_snapshot(conn, self._store.meta(conn))
        self._store.save_index(self._index, self._index_gen, self._cipher)
        self._store.checkpoint_truncate()
        self._store.vacuum()
        with self._store.write() as conn:
            Store.set_meta(conn, erase_pending=0)
        self._store.checkpoint_truncate()

    # ------------------------------------------------------------------ public API

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError(f"{self.path}: the gallery is closed")

    def enroll(self, writer_id: str, images: Sequence[ImageInput] | ImageInput) -> EnrollResult:
        """Add reference signatures of a writer (created on first enrolment).

        All images are embedded first; the gallery changes only if every one is usable,
        in one transaction. Raises :class:`InvalidImageError` / :class:`NoSignatureError`
        for a bad image (naming it), :class:`UsageError` for a bad writer id.
        """
        self._check_open()
        writer_id = _check_writer_id(writer_id)
        images = _as_image_list(images)
        if not images:
            raise UsageError("enroll needs at least one image")
        vectors, inks, crops = describe_images(self.pipeline, images, self.keep_crops)
        return self._enroll_embeddings(writer_id, vectors, crops, inks)

    def _enroll_embeddings(self, writer_id: str, vectors: np.ndarray, crops: list | None = None,
                           inks: np.ndarray | None = None) -> EnrollResult:
        """Store precomputed embeddings (and ink statistics) of a writer: the part of
        :meth:`enroll` after embedding."""
        writer_id = _check_writer_id(writer_id)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self._dim or len(vectors) == 0:
            raise UsageError(f"expected embeddings of shape (n, {self._dim}), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise GalleryError("the model produced non-finite embeddings; nothing was enrolled")
        if inks is not None:
            inks = np.asarray(inks, dtype=np.float32)
            if (inks.ndim != 2 or inks.shape[0] != len(vectors) or inks.shape[1] < len(INK_STATISTICS)
                    or not np.isfinite(inks).all()):
                raise GalleryError(f"expected finite ink vectors of shape ({len(vectors)}, K), K at least "
                                   f"{len(INK_STATISTICS)}, "
                                   f"got {inks.shape}; nothing was enrolled")
        norms = np.linalg.norm(vectors, axis=1)
        if (norms < 1e-6).any():
            log.warning("enrol %r: the model produced an all-zero embedding (untrained placeholder model?)", writer_id)
        vectors = vectors / np.maximum(norms, 1e-12)[:, None]
        with self._mutex, self._store.lock.hold():
            self._check_open()
            self._recover_locked()
            now = time.time()
            lookup = self._lookup(writer_id)
            with self._store.write() as conn:
                self._ensure_model_in_txn(conn)
                self._ensure_cleaning_in_txn(conn)
                gen = int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]) + 1
                found = conn.execute("SELECT id, ref FROM writers WHERE lookup=?", (lookup,)).fetchone()
                if found is None:
                    ref = secrets.token_hex(8)
                    cur = conn.execute("INSERT INTO writers(lookup, name, ref, created) VALUES (?, ?, ?, ?)",
                                       (lookup, self._seal(writer_id.encode("utf-8"), b"sigedge/writer-name"), ref, now))
                    row = int(cur.lastrowid)
                else:
                    row, ref = int(found[0]), str(found[1])
                ids = []
                if inks is not None:
                    self._ensure_ink_layout_in_txn(conn)
                    ensure_ink_schema(conn)  # a gallery made before ink statistics gains the table
                for i, v in enumerate(vectors):
                    cur = conn.execute("INSERT INTO samples(writer, generation, enrolled, vector) VALUES (?, ?, ?, ?)",
                                       (row, gen, now, self._seal(v.astype("<f4").tobytes(), b"sigedge/vector|%d" % row)))
                    sid = int(cur.lastrowid)
                    ids.append(sid)
                    if inks is not None:
                        conn.execute("INSERT INTO sample_ink(sample_id, data) VALUES (?, ?)",
                                     (sid, self._seal(inks[i].astype("<f4").tobytes(), b"sigedge/ink|%d" % row)))
                    if crops is not None:
                        kind, data = crops[i]
                        conn.execute("INSERT INTO crops(sample_id, kind, data) VALUES (?, ?, ?)",
                                     (sid, kind, self._seal(data, b"sigedge/crop|%d" % row)))
                total = int(conn.execute("SELECT COUNT(*) FROM samples WHERE writer=?", (row,)).fetchone()[0])
                Store.set_meta(conn, generation=gen)
                if self.options.audit:
                    self._audit_in_txn(conn, {"event": "enroll", "writer": "w:" + ref, "samples": len(ids),
                                              "total": total, "model_sha256": self.pipeline.model_sha256,
                                              "decision": "enrolled"})
            self._flush_audit()
            self._refresh()
            self._maybe_save_locked()
        log.info("enrolled %d sample(s) of a writer (%d now)", len(ids), total)
        return EnrollResult(writer_id=writer_id, added=len(ids), samples=total, sample_ids=tuple(ids),
                            new_writer=found is None, crops_kept=crops is not None,
                            model_sha256=self.pipeline.model_sha256)

    @property
    def identify_threshold(self) -> float:
        """Score a writer needs to be accepted by :meth:`identify`."""
        if self.options.identify_threshold is not None:
            return float(self.options.identify_threshold)
        bundle = getattr(self.pipeline, "bundle", None)
        if bundle is not None:
            t = bundle.identification.get("threshold")
            if t is not None:
                return float(t)
            # verification thresholds are on identify's scale (the plain fused cosine) only
            # without a per-writer normalisation; a learned scorer keeps the cosine's own
            ver = bundle.verification
            if ver.get("writer_normalisation"):
                raise GalleryError("the model states no identification threshold (its verification thresholds "
                                   "are for writer-normalised scores): set GalleryOptions(identify_threshold=...)")
            cosine = ver.get("cosine", {}) if ver.get("scorer") else ver
            t = cosine.get("thresholds", {}).get("far_random_1pct")
            if t is not None:
                return float(t)
            if ver.get("scorer"):
                raise GalleryError("the model states no cosine threshold for identification: set "
                                   "GalleryOptions(identify_threshold=...)")
        t = getattr(self.pipeline, "threshold", None)
        if t is None:
            raise GalleryError("the model states no threshold: set GalleryOptions(identify_threshold=...)")
        return float(t)

    @property
    def identify_fusion(self) -> Fusion:
        if self.options.identify_fusion is not None:
            return self.options.identify_fusion
        fusion = getattr(self.pipeline, "fusion", None)
        if fusion is None:
            bundle = getattr(self.pipeline, "bundle", None)
            fusion = bundle.verification.get("fusion", "mean") if bundle is not None else "mean"
        return fusion  # type: ignore[return-value]

    def identify(self, image: ImageInput, k: int = 5, *, include_rejected: bool = False) -> list[Match]:
        """Which enrolled writers is this signature most likely by? (open-set 1:N)

        Writers are ranked by the bundle's fusion of the query's similarities to all their
        references: the fused cosine, not verification's learned scorer or per-writer
        normalisation (which would need every candidate's references and ink statistics, and
        are calibrated for 1:1 claims). With mean fusion (the
        default) that is the inner product with the writer's mean reference vector, which
        the index holds, so the index's search ranks writers directly; other fusions
        re-score the index's best ``candidates`` writers on their stored references.
        Returns the accepted matches (score >= :attr:`identify_threshold`),
        best first, at most ``k``; an empty list means an unknown signer. With
        ``include_rejected`` the best ``k`` are returned whatever their score.
        """
        self._check_open()
        if k < 1:
            raise UsageError("k must be at least 1")
        self._warn_cleaning_mismatch()
        query = np.asarray(self.pipeline.embed(image), dtype=np.float32)
        with self._mutex:
            matches = self._identify_embedding(query, k)
            if self.options.audit and self.options.audit_reads:
                top = matches[0] if matches else None
                self._log_read_event({
                    "event": "identify", "k": int(k), "model_sha256": self.pipeline.model_sha256,
                    "writer": ("w:" + self._writer_refs.get(self._writer_rows.get(top.writer_id, -1), "?"))
                    if top else None,
                    "score": _finite(top.score) if top else None, "threshold": _finite(self.identify_threshold),
                    "decision": "match" if top is not None and top.accepted else "unknown"})
        return matches if include_rejected else [m for m in matches if m.accepted]

    def _identify_embedding(self, query: np.ndarray, k: int, refresh: bool = True) -> list[Match]:
        """Top-``k`` writers for a precomputed query embedding (accepted or not)."""
        with self._mutex:
            self._check_open()
            if refresh:
                self._refresh()
            if self._live == 0:
                return []
            q = np.asarray(query, dtype=np.float32).reshape(-1)
            norm = float(np.linalg.norm(q))
            if norm > 0:
                q = q / norm
            fusion = self.identify_fusion
            n = min(self._live, k if fusion == "mean" else (self.options.candidates or max(10 * k, 50)))
            if self._live <= self.options.exact_search_limit:
                used = self._slots_used
                sims = self._means[:used] @ q
                sims[self._mean_row[:used] < 0] = -np.inf
                top = np.argpartition(-sims, n - 1)[:n] if n < used else np.arange(used)
                top = top[np.argsort(-sims[top], kind="stable")][:n]
                rows = [int(self._mean_row[i]) for i in top]
                scores = [float(sims[i]) for i in top]
            else:
                self._index.set_ef(max(self.options.ef_search, n))
                labels, dist = self._index.knn_query(q, k=n, num_threads=self.options.threads)
                rows = [int(r) for r in labels[0]]
                scores = [1.0 - float(d) for d in dist[0]]  # inner product with the mean reference
            if fusion != "mean":
                scores = self._fused_scores(rows, q, fusion)
                order = sorted(range(len(rows)), key=lambda i: -scores[i])[:k]
                rows, scores = [rows[i] for i in order], [scores[i] for i in order]
            threshold = self.identify_threshold
            return [Match(writer_id=self._writer_names[r], score=s, accepted=bool(s >= threshold),
                          threshold=threshold, references=self._writer_counts.get(r, 0), rank=i + 1)
                    for i, (r, s) in enumerate(zip(rows, scores))]

    def _fused_scores(self, rows: list[int], q: np.ndarray, fusion: Fusion) -> list[float]:
        """Scores of candidate writers under a fusion other than the mean, from their stored vectors."""
        from .scoring import fuse_scores

        vectors: dict[int, list[np.ndarray]] = {}
        with self._store.read() as conn:
            marks = ",".join("?" * len(rows))
            for writer, blob in conn.execute(f"SELECT writer, vector FROM samples WHERE writer IN ({marks})", rows):
                vectors.setdefault(int(writer), []).append(self._vector(blob, int(writer)))
        return [fuse_scores(np.stack(vectors[r]) @ q, fusion) if r in vectors else float("-inf") for r in rows]

    def _log_read_event(self, event: dict[str, Any]) -> None:
        with self._store.lock.hold():
            self._recover_locked()
            with self._store.write() as conn:
                self._audit_in_txn(conn, event)
            self._flush_audit()

    def _writer_vectors(self, writer_id: str) -> tuple[np.ndarray, str]:
        vectors, _, ref = self._writer_samples(writer_id)
        return vectors, ref

    def _writer_samples(self, writer_id: str) -> tuple[np.ndarray, np.ndarray | None, str]:
        """A writer's reference embeddings, their ink statistics (None unless every sample has
        them) and the writer's pseudonym."""
        with self._store.read() as conn:
            found = conn.execute("SELECT id, ref FROM writers WHERE lookup=?", (self._lookup(writer_id),)).fetchone()
            if found is None:
                raise GalleryError(f"no writer {writer_id!r} in the gallery {self.path}")
            row, ref = int(found[0]), str(found[1])
            stale = self._ink_stale(conn)
            if has_table(conn, "sample_ink"):
                rows = conn.execute("SELECT s.vector, i.data FROM samples s LEFT JOIN sample_ink i ON i.sample_id = s.id "
                                    "WHERE s.writer=? ORDER BY s.id", (row,)).fetchall()
            else:
                rows = [(b, None) for (b,) in conn.execute("SELECT vector FROM samples WHERE writer=? ORDER BY id",
                                                            (row,))]
        vectors = np.stack([self._vector(b, row) for b, _ in rows])
        inks = None
        if all(d is not None for _, d in rows):
            stored = [np.frombuffer(self._open_blob(d, b"sigedge/ink|%d" % row), dtype="<f4") for _, d in rows]
            # samples measured before the bundle's scorer weighed the contour hinge hold the ink
            # statistics alone: the writer's references then share those
            width = min(len(k) for k in stored)
            if stale:  # measured with another contour hinge: its histograms are not this one's
                width = min(width, len(INK_STATISTICS))
            if width < len(INK_STATISTICS):
                raise GalleryError(f"{self.path}: stored ink statistics have {width} values, expected at least "
                                   f"{len(INK_STATISTICS)}")
            inks = np.stack([k[:width] for k in stored])
        return vectors, inks, ref

    def _usable_ink(self, inks: np.ndarray | None, width: int | None = None) -> np.ndarray | None:
        """A writer's stored ink vectors cut to what the pipeline measures of a query (``width``
        values, default its ``ink_width``), or None (with a warning where the bundle's scorer
        then cannot score) when they hold less."""
        if width is None:
            width = getattr(self.pipeline, "ink_width", len(INK_STATISTICS))
        scorer = getattr(self.pipeline, "scorer", None)
        if inks is None or inks.shape[1] < width:
            if scorer is not None:
                what = ("no ink statistics" if inks is None else
                        "ink vectors measured otherwise than this bundle measures them (without its contour hinge or "
                        "strips, or with other settings: `sigedge gallery-info` shows how)")
                log.warning("this writer's references have %s (enrolled before galleries kept them, re-embedded "
                            "by a sigedge that did not measure them, or by another bundle): scored by the cosine "
                            "alone, not the bundle's learned scorer (sigedge reindex measures them where the images "
                            "were kept; otherwise re-enrol)", what)
            return None
        return inks[:, :width]

    def _measure_missing_ink_locked(self) -> tuple[int, int, int]:
        """Ink vectors for the samples without them (or with shorter ones, or measured another
        way) that kept their image; (measured, left, cut): ``cut`` samples measured another way
        without a kept image keep only their ink statistics, which every layout shares."""
        with self._store.read() as conn:
            if has_table(conn, "sample_ink"):
                rows = conn.execute("SELECT s.id, s.writer, c.data, i.data FROM samples s "
                                    "LEFT JOIN crops c ON c.sample_id = s.id "
                                    "LEFT JOIN sample_ink i ON i.sample_id = s.id WHERE i.sample_id IS NULL "
                                    "OR length(i.data) < ? ORDER BY s.id", (self._ink_bytes(conn),)).fetchall()
                stale = self._ink_stale(conn)
            else:
                rows = conn.execute("SELECT s.id, s.writer, c.data, NULL FROM samples s "
                                    "LEFT JOIN crops c ON c.sample_id = s.id ORDER BY s.id").fetchall()
                stale = False
        measured, cut = [], []
        for sid, row, data, ink_data in rows:
            if data is None:
                if stale and ink_data is not None:
                    stats = self._open_blob(ink_data, b"sigedge/ink|%d" % row)[:4 * len(INK_STATISTICS)]
                    cut.append((sid, self._seal(stats, b"sigedge/ink|%d" % row)))
                continue
            try:
                ink = self.pipeline.describe(self._open_blob(data, b"sigedge/crop|%d" % row)).ink
            except SigedgeError as exc:
                raise GalleryError(f"{self.path}: cannot measure stored sample {sid}: {exc}") from exc
            measured.append((sid, self._seal(np.asarray(ink, "<f4").tobytes(), b"sigedge/ink|%d" % row)))
        if measured or cut:
            with self._store.write() as conn:
                ensure_ink_schema(conn)
                conn.executemany("INSERT OR REPLACE INTO sample_ink(sample_id, data) VALUES (?, ?)", measured + cut)
                if self._ink_layout():
                    Store.set_meta(conn, ink_layout=self._ink_layout())
                if self.options.audit:
                    self._audit_in_txn(conn, {"event": "reindex", "model_sha256": self.pipeline.model_sha256,
                                              "samples": len(measured), "ink_statistics_only": len(cut),
                                              "decision": "ink measured"})
            self._flush_audit()
        left = len(rows) - len(measured)
        if left:
            log.warning("%s: %d sample(s) have no kept image to measure their ink vectors from: their writers "
                        "are verified by the cosine alone until re-enrolled", self.path, left)
        return len(measured), left, len(cut)

    def _ink_bytes(self, conn) -> int:
        """Bytes of a sample's stored ink vector as the pipeline measures it (unencrypted; an
        encrypted one is longer): shorter ones were measured without the contour hinge the
        bundle's scorer now weighs, and are measured again by ``reindex``; so are all of them
        when they were measured another way (:meth:`_ink_stale`)."""
        if self._ink_stale(conn):
            return 2 ** 62
        return 4 * int(getattr(self.pipeline, "ink_width", len(INK_STATISTICS)))

    def _samples_without_ink(self, conn) -> int:
        if not has_table(conn, "sample_ink"):
            return int(conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
        return int(conn.execute("SELECT COUNT(*) FROM samples s LEFT JOIN sample_ink i ON i.sample_id = s.id "
                                "WHERE i.sample_id IS NULL OR length(i.data) < ?", (self._ink_bytes(conn),)).fetchone()[0])

    def references(self, writer_id: str) -> np.ndarray:
        """The stored reference embeddings (n, D) of a writer."""
        self._check_open()
        return self._writer_vectors(_check_writer_id(writer_id))[0]

    def verify(self, writer_id: str, image: ImageInput) -> VerifyResult:
        """Is ``image`` by the enrolled ``writer_id``? 1:1 against their stored references."""
        self._check_open()
        writer_id = _check_writer_id(writer_id)
        refs, inks, ref = self._writer_samples(writer_id)
        self._warn_cleaning_mismatch()
        describe_query = getattr(self.pipeline, "describe_query", None)
        if describe_query is not None:  # sigedge.Pipeline: the query at its rotations
            result = self.pipeline.verify_features(describe_query(image), refs, self._usable_ink(inks))
        elif getattr(self.pipeline, "describe", None) is not None and inks is not None:  # ink, no rotations
            q = self.pipeline.describe(image)
            usable = self._usable_ink(inks, len(q.ink))
            result = self.pipeline.verify_embeddings(np.asarray(q.embedding, np.float32), refs,
                                                     None if usable is None else q.ink, usable)
        else:  # an embedder without ink statistics or rotations: the embeddings alone
            query = np.asarray(self.pipeline.embed(image), dtype=np.float32)
            result = self.pipeline.verify_embeddings(query, refs)
        if self.options.audit and self.options.audit_reads:
            with self._mutex:
                self._log_read_event({
                    "event": "verify", "writer": "w:" + ref, "model_sha256": result.model_sha256,
                    "score": _finite(result.score), "threshold": _finite(result.threshold),
                    "operating_point": result.operating_point, "scorer": result.scorer,
                    "decision": "genuine" if result.genuine else "rejected"})
        return result

    def remove(self, writer_id: str) -> int:
        """Erase a writer: their vectors, images and id leave every file of the gallery.

        Returns the number of samples erased; raises :class:`GalleryError` for an unknown
        writer. When this returns, the erasure is complete (a process killed midway leaves
        it to be completed by the next one that opens the gallery).
        """
        self._check_open()
        writer_id = _check_writer_id(writer_id)
        with self._mutex, self._store.lock.hold():
            self._recover_locked()
            with self._store.write() as conn:
                found = conn.execute("SELECT id, ref FROM writers WHERE lookup=?", (self._lookup(writer_id),)).fetchone()
                if found is None:
                    raise GalleryError(f"no writer {writer_id!r} in the gallery {self.path}")
                row, ref = int(found[0]), str(found[1])
                gen = int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]) + 1
                sids = [int(s) for (s,) in conn.execute("SELECT id FROM samples WHERE writer=?", (row,))]
                conn.execute("DELETE FROM crops WHERE sample_id IN (SELECT id FROM samples WHERE writer=?)", (row,))
                if has_table(conn, "sample_ink"):
                    conn.execute("DELETE FROM sample_ink WHERE sample_id IN (SELECT id FROM samples WHERE writer=?)",
                                 (row,))
                conn.execute("DELETE FROM samples WHERE writer=?", (row,))
                conn.execute("INSERT OR REPLACE INTO tombstones(writer, generation) VALUES (?, ?)", (row, gen))
                conn.execute("DELETE FROM writers WHERE id=?", (row,))
                Store.set_meta(conn, generation=gen, erase_pending=1)
                if self.options.audit:
                    self._audit_in_txn(conn, {"event": "remove", "writer": "w:" + ref, "samples": len(sids),
                                              "decision": "erased"})
            self._flush_audit()
            self._finish_erasure_locked()
        log.info("removed a writer (%d samples erased)", len(sids))
        return len(sids)

    def writers(self) -> list[WriterInfo]:
        """Enrolled writers, sorted by id."""
        self._check_open()
        with self._store.read() as conn:
            rows = conn.execute("SELECT w.name, w.ref, COUNT(s.id), MIN(s.enrolled), MAX(s.enrolled) "
                                "FROM writers w JOIN samples s ON s.writer = w.id GROUP BY w.id").fetchall()
        out = [WriterInfo(writer_id=self._writer_name(name), samples=int(n), first_enrolled=_iso(t0),
                          last_enrolled=_iso(t1), ref="w:" + ref) for name, ref, n, t0, t1 in rows]
        return sorted(out, key=lambda w: w.writer_id)

    def writer_ref(self, writer_id: str) -> str:
        """The pseudonym under which a writer appears in the audit log (``w:`` + hex)."""
        self._check_open()
        with self._store.read() as conn:
            found = conn.execute("SELECT ref FROM writers WHERE lookup=?", (self._lookup(writer_id),)).fetchone()
        if found is None:
            raise GalleryError(f"no writer {writer_id!r} in the gallery {self.path}")
        return "w:" + str(found[0])

    def __contains__(self, writer_id: object) -> bool:
        if not isinstance(writer_id, str) or self._closed:
            return False
        with self._store.read() as conn:
            return conn.execute("SELECT 1 FROM writers WHERE lookup=?", (self._lookup(writer_id),)).fetchone() is not None

    def __len__(self) -> int:
        """Number of enrolled writers (see :attr:`sample_count` for references)."""
        self._check_open()
        with self._store.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM writers").fetchone()[0])

    @property
    def sample_count(self) -> int:
        """Number of reference samples over all writers."""
        self._check_open()
        with self._store.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    @property
    def encrypted(self) -> bool:
        return self._cipher is not None

    def info(self) -> GalleryInfo:
        """Counts, model, sizes: what ``sigedge gallery-info`` shows."""
        self._check_open()
        with self._mutex:
            self._refresh()
            with self._store.read() as conn:
                meta = self._store.meta(conn)
                writers = conn.execute("SELECT COUNT(*) FROM writers").fetchone()[0]
                samples = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
                crops = conn.execute("SELECT COUNT(*) FROM crops").fetchone()[0]
            files = self._store.index_files()
            return GalleryInfo(
                path=os.fsdecode(self.path), writers=int(writers), samples=int(samples), crops=int(crops),
                model_sha256=str(meta["model_sha256"]), model_name=str(meta.get("model_name") or ""),
                model_version=str(meta.get("model_version") or ""), dim=int(meta["dim"]),
                encrypted=self._cipher is not None, created=_iso(float(meta["created"])),
                generation=int(meta["generation"]), index_generation=files[0][0] if files else None,
                index_elements=int(self._index.element_count), index_deleted=self._index_deleted,
                disk_bytes=self._store.disk_bytes(), audit_events=int(meta.get("audit_seq") or 0),
                hnsw={"M": int(meta.get("hnsw_M") or 0), "ef_construction": int(meta.get("hnsw_ef_construction") or 0),
                      "ef_search": self.options.ef_search, "space": _SPACE},
                cleaning=str(meta.get("cleaning") or ""), ink_layout=str(meta.get("ink_layout") or ""))

    def check_audit(self) -> AuditReport:
        """Verify the audit log's hash chain against the head stored in the database."""
        self._check_open()
        with self._mutex, self._store.lock.hold():
            self._recover_locked()
            meta = self._store.meta()
            return verify_chain(self._audit.read_bytes(), int(meta.get("audit_seq") or 0),
                                str(meta.get("audit_hash") or GENESIS_HASH), path=os.fsdecode(self._audit.path))

    def save(self) -> None:
        """Save the index file now (normally done when due and on :meth:`close`)."""
        self._check_open()
        with self._mutex, self._store.lock.hold():
            self._recover_locked()
            self._maybe_save_locked(force=True)

    def _reindex(self, force: bool = False) -> ReindexResult:
        t0 = time.perf_counter()
        with self._mutex, self._store.lock.hold():
            self._recover_locked()
            meta = self._store.meta()
            old = str(meta["model_sha256"])
            new = self.pipeline.model_sha256
            with self._store.read() as conn:
                rows = conn.execute("SELECT s.id, s.writer, c.kind, c.data FROM samples s "
                                    "LEFT JOIN crops c ON c.sample_id = s.id ORDER BY s.id").fetchall()
                without_ink = self._samples_without_ink(conn)
            old_cleaning, cleaning = str(meta.get("cleaning") or ""), self._cleaning()
            # galleries that did not record it were cleaned classically (the only way then)
            same_cleaning = _stored_cleaning(old_cleaning) == cleaning or not cleaning
            if old == new and int(meta["dim"]) == self._dim and same_cleaning and not force:
                # the vectors are current; samples enrolled before galleries kept ink
                # statistics get them from their kept image, where there is one
                if without_ink and getattr(self.pipeline, "describe", None) is not None:
                    measured, left, cut = self._measure_missing_ink_locked()
                    return ReindexResult(len(rows), old, new, measured + cut > 0, time.perf_counter() - t0, measured,
                                         left, old_cleaning, cleaning)
                return ReindexResult(len(rows), old, new, False, time.perf_counter() - t0,
                                     previous_cleaning=old_cleaning, cleaning=cleaning)
            missing = sum(1 for r in rows if r[3] is None)
            if missing:
                raise GalleryError(
                    f"{self.path}: cannot reindex: {missing} of {len(rows)} samples were enrolled without keeping "
                    "their image (--keep-crops); re-enrol those writers from their images with the new model")
            vectors, inks = [], []
            describe = getattr(self.pipeline, "describe", None)
            for sid, row, _kind, data in rows:
                image = self._open_blob(data, b"sigedge/crop|%d" % row)
                try:
                    if describe is not None:
                        f = describe(image)
                        v = np.asarray(f.embedding, dtype=np.float32)
                        inks.append(np.asarray(f.ink, dtype=np.float32))
                    else:
                        v = np.asarray(self.pipeline.embed(image), dtype=np.float32)
                except SigedgeError as exc:
                    raise GalleryError(f"{self.path}: cannot re-embed stored sample {sid}: {exc}") from exc
                vectors.append(v / max(float(np.linalg.norm(v)), 1e-12))
            with self._store.write() as conn:
                gen = int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]) + 1
                conn.executemany("UPDATE samples SET vector=?, generation=? WHERE id=?",
                                 [(self._seal(v.astype("<f4").tobytes(), b"sigedge/vector|%d" % r[1]), gen, r[0])
                                  for v, r in zip(vectors, rows)])
                ensure_ink_schema(conn)
                conn.execute("DELETE FROM sample_ink")  # statistics of the old preprocessing go too
                conn.executemany("INSERT INTO sample_ink(sample_id, data) VALUES (?, ?)",
                                 [(r[0], self._seal(k.astype("<f4").tobytes(), b"sigedge/ink|%d" % r[1]))
                                  for k, r in zip(inks, rows)])
                Store.set_meta(conn, generation=gen, rebuild_generation=gen, model_sha256=new, dim=self._dim,
                               model_name=self._bundle_attr("name"), model_version=self._bundle_attr("version"),
                               cleaning=cleaning, ink_layout=self._ink_layout() if describe is not None else "")
                if self.options.audit:
                    self._audit_in_txn(conn, {"event": "reindex", "model_sha256": new,
                                              "previous_model_sha256": old, "samples": len(rows),
                                              "cleaning": cleaning, "previous_cleaning": old_cleaning,
                                              "decision": "reindexed"})
            self._flush_audit()
            self._stored_dim = self._dim
            self._model_guard = True
            with self._store.read() as conn:
                self._rebuild_in_snapshot(conn, self._store.meta(conn))
            self._store.save_index(self._index, self._index_gen, self._cipher)
            self._store.checkpoint_truncate()
        log.info("%s: reindexed %d samples with model %s", self.path, len(rows), new[:12])
        return ReindexResult(len(rows), old, new, True, time.perf_counter() - t0,
                             previous_cleaning=old_cleaning, cleaning=cleaning)

    def close(self) -> None:
        """Save the index if due and release the database. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            try:
                self._store.lock.acquire(timeout=0)
            except GalleryError:
                log.debug("%s: busy, index not saved at close", self.path)
            else:
                try:
                    self._recover_locked()
                    self._maybe_save_locked()
                except (GalleryError, OSError) as exc:
                    log.warning("%s: could not save the index at close: %s", self.path, exc)
                finally:
                    self._store.lock.release()
            self._closed = True
            self._index = None
            self._store.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery({os.fsdecode(self.path)!r}{', closed' if self._closed else ''})"


def embed_images(pipeline: Embedder, images: Sequence[ImageInput], keep_crops: bool = False
                 ) -> tuple[np.ndarray, list[tuple[str, bytes]] | None]:
    """Embeddings (n, D) of images, and their encoded bytes when ``keep_crops``. A bad image
    raises its error, naming the image."""
    vectors, _, crops = describe_images(pipeline, images, keep_crops)
    return vectors, crops


def describe_images(pipeline: Embedder, images: Sequence[ImageInput], keep_crops: bool = False
                    ) -> tuple[np.ndarray, np.ndarray | None, list[tuple[str, bytes]] | None]:
    """Embeddings (n, D) of images, their ink statistics (n, 4) where the pipeline measures
    them (None otherwise), and their encoded bytes when ``keep_crops``: what
    :meth:`Gallery.enroll` stores. A bad image raises its error, naming the image."""
    n = len(images)
    describe = getattr(pipeline, "describe", None)
    vectors, inks, crops = [], [], ([] if keep_crops else None)
    for i, image in enumerate(images):
        try:
            if describe is not None:
                f = describe(image)
                vectors.append(np.asarray(f.embedding, dtype=np.float32))
                inks.append(np.asarray(f.ink, dtype=np.float32))
            else:
                vectors.append(np.asarray(pipeline.embed(image), dtype=np.float32))
            if crops is not None:
                crops.append(_crop_of(image))
        except SigedgeError as exc:
            if isinstance(image, (str, os.PathLike)) or n == 1:
                raise  # the message already names the file
            raise type(exc)(f"image {i + 1} of {n}: {exc}") from exc
    return np.stack(vectors), (np.stack(inks) if describe is not None else None), crops


def _crop_of(image: ImageInput) -> tuple[str, bytes]:
    if isinstance(image, (str, os.PathLike)):
        return "original", read_image_bytes(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "original", bytes(image)
    import cv2

    ok, buf = cv2.imencode(".png", load_image(image))
    if not ok:  # pragma: no cover - PNG encoding of a uint8 image does not fail
        raise GalleryError("cannot encode the image to keep it")
    return "png", buf.tobytes()


def recorded_cleaning(path: str | os.PathLike) -> str:
    """How the references of the gallery at ``path`` were cleaned, as it recorded it (the form
    of :attr:`Pipeline.cleaning`); ``""`` where there is no gallery yet or it predates the record.
    Needs no key: the record is not secret."""
    directory = Path(os.fsdecode(path))
    if not directory.is_dir() or not (directory / DB_FILE).exists():
        return ""
    store = Store(directory, create=False)
    try:
        return str(store.meta().get("cleaning") or "") if store.is_initialised() else ""
    finally:
        store.close()


def pipeline_for_gallery(path: str | os.PathLike, bundle: str | os.PathLike | None = None,
                         options: Any = None) -> Any:
    """A :class:`~sigedge.pipeline.Pipeline` that cleans queries and new references the way the
    gallery at ``path`` cleaned its references (``options`` otherwise; a new gallery keeps them).
    Raises :class:`GalleryError` when that needs a learned cleaner the bundle does not have."""
    from .pipeline import Pipeline, PipelineOptions

    options = options or PipelineOptions()
    cleaning = recorded_cleaning(path)
    if not cleaning:
        return Pipeline(bundle, options)
    try:
        options = options.with_cleaning(cleaning)
    except ValueError as exc:
        raise GalleryError(f"{os.fsdecode(path)}: {exc}") from None
    try:
        return Pipeline(bundle, options)
    except MissingCleanerError as exc:
        raise GalleryError(f"{os.fsdecode(path)}: its references were cleaned {cleaning!r}, but {exc}: give another "
                           f"cleaning explicitly (--cleaner classic; queries then differ from the references) or "
                           f"use a bundle with that cleaner") from None


def check_audit(path: str | os.PathLike) -> AuditReport:
    """Check a gallery's audit log without its key or model (what ``sigedge audit check`` runs)."""
    directory = Path(os.fsdecode(path))
    store = Store(directory, create=False)
    try:
        if not store.is_initialised():
            raise GalleryError(f"{directory}: no gallery here")
        audit = AuditLog(directory / AUDIT_FILE)
        with store.lock.hold():
            meta = store.meta()
            pending = str(meta.get("audit_pending") or "")
            if pending:
                audit.recover(int(meta["audit_seq"]), str(meta["audit_hash"]), pending)
                with store.write() as conn:
                    Store.set_meta(conn, audit_pending="")
            return verify_chain(audit.read_bytes(), int(meta.get("audit_seq") or 0),
                                str(meta.get("audit_hash") or GENESIS_HASH), path=os.fsdecode(audit.path))
    finally:
        store.close()


def ink_layouts_compatible(recorded: str, layout: str) -> bool:
    """Whether ink vectors measured as ``recorded`` compare with ones measured as ``layout``
    (:attr:`sigedge.Pipeline.ink_layout`): the same, one extending the other (the shorter
    vectors are what a gallery's length checks handle), or either not recorded."""
    if not recorded or not layout:
        return True
    a, b = recorded.split("+"), layout.split("+")
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def reindex_gallery(path: str | os.PathLike, pipeline: Embedder | None = None, *, key: KeyArg = None,
                    force: bool = False, options: GalleryOptions | None = None) -> ReindexResult:
    """Re-embed a gallery's stored images with ``pipeline`` (default: the bundled model).

    Needs the images: galleries enrolled with ``keep_crops``. Refuses (GalleryError)
    otherwise. Does nothing when the gallery already uses this model, unless ``force``.
    """
    with Gallery(path, pipeline, key=key, create=False, options=options, _check_model=False) as g:
        return g._reindex(force=force)


def verify_in_gallery(gallery_path: str | os.PathLike, writer: str, query: ImageInput, key: KeyArg = None,
                      pipeline: Embedder | None = None, options: GalleryOptions | None = None) -> VerifyResult:
    """1:1 verification of ``query`` against ``writer``'s references stored in a gallery."""
    with Gallery(gallery_path, pipeline, key=key, create=False, options=options) as g:
        return g.verify(writer, query)
