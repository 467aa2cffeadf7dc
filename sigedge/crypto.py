"""Encryption at rest for galleries: AES-256-GCM for data, HMAC-SHA256 for look-ups.

A gallery key is 32 random bytes. It is given as raw bytes, or as text (hex or base64)
in the ``SIGEDGE_GALLERY_KEY`` environment variable or in a key file. From it and a
random per-gallery salt, two sub-keys are derived with HMAC-SHA256: one encrypts
(AES-GCM, a fresh 96-bit nonce per item), the other turns writer ids into opaque
look-up tokens, so that the database can find a writer without storing the id in clear.

``cryptography`` is imported only here and only when a key is actually used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path
from typing import Union

from .errors import GalleryError, UsageError

__all__ = ["KEY_ENV", "KEY_BYTES", "GalleryCipher", "parse_key", "read_key_file", "key_from_env", "generate_key"]

#: Environment variable holding a gallery key (hex or base64 of 32 bytes).
KEY_ENV = "SIGEDGE_GALLERY_KEY"
KEY_BYTES = 32
_NONCE_BYTES = 12
_CHECK_PLAINTEXT = b"sigedge-gallery key check v1"

KeyInput = Union[bytes, bytearray, str]


def generate_key() -> bytes:
    """32 fresh random bytes, usable as a gallery key."""
    return os.urandom(KEY_BYTES)


def parse_key(key: KeyInput, source: str = "key") -> bytes:
    """32 key bytes from raw bytes, or from hex / base64 text (str or bytes).

    Raises :class:`UsageError` when the input is not 32 bytes in any of these forms.
    """
    if isinstance(key, (bytes, bytearray)):
        raw = bytes(key)
        if len(raw) == KEY_BYTES:
            return raw
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise UsageError(f"{source}: a gallery key is 32 bytes (got {len(raw)} raw bytes)") from None
    elif isinstance(key, str):
        text = key
    else:
        raise UsageError(f"{source}: a gallery key must be bytes or text, not {type(key).__name__}")
    text = text.strip()
    candidates: list[bytes] = []
    if len(text) == 2 * KEY_BYTES:
        try:
            candidates.append(bytes.fromhex(text))
        except ValueError:
            pass
    for decode in (lambda t: base64.b64decode(t, validate=True), base64.urlsafe_b64decode):
        try:
            candidates.append(decode(text.encode("ascii")))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            pass
    for c in candidates:
        if len(c) == KEY_BYTES:
            return c
    raise UsageError(f"{source}: a gallery key is 32 bytes, written as 64 hex digits or 44 base64 characters")


def read_key_file(path: Union[str, os.PathLike]) -> bytes:
    """The key in a key file: 32 raw bytes, or hex / base64 text."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UsageError(f"{os.fsdecode(p)}: cannot read key file ({exc.strerror or exc})") from exc
    if len(data) != KEY_BYTES:
        data = data.strip()
    return parse_key(data, source=os.fsdecode(p))


def key_from_env() -> bytes | None:
    """The key in ``SIGEDGE_GALLERY_KEY``, or None when the variable is unset or empty."""
    value = os.environ.get(KEY_ENV, "").strip()
    return parse_key(value, source=KEY_ENV) if value else None


def _aesgcm(key: bytes):
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UsageError("gallery encryption needs the 'cryptography' package: pip install cryptography") from exc
    return AESGCM(key)


class GalleryCipher:
    """Encrypts and authenticates a gallery's items with keys derived from the user's key."""

    def __init__(self, key: bytes, salt: bytes):
        if len(key) != KEY_BYTES:
            raise UsageError("a gallery key is 32 bytes")
        self._enc_key = hmac.new(key, salt + b"|sigedge/aes-gcm", hashlib.sha256).digest()
        self._mac_key = hmac.new(key, salt + b"|sigedge/writer-id", hashlib.sha256).digest()
        self._aead = _aesgcm(self._enc_key)

    def encrypt(self, plaintext: bytes, purpose: bytes) -> bytes:
        """nonce || ciphertext+tag; ``purpose`` is bound as associated data."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, purpose)

    def decrypt(self, blob: bytes, purpose: bytes) -> bytes:
        """Inverse of :meth:`encrypt`; a wrong key or altered data is a :class:`GalleryError`."""
        from cryptography.exceptions import InvalidTag

        blob = bytes(blob)
        if len(blob) < _NONCE_BYTES + 16:
            raise GalleryError("encrypted gallery item is truncated")
        try:
            return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], purpose)
        except InvalidTag:
            raise GalleryError("gallery data does not decrypt with this key (wrong key, or the data was altered)") from None

    def lookup_token(self, writer_id: str) -> str:
        """Opaque, deterministic token of a writer id (HMAC-SHA256, hex)."""
        return hmac.new(self._mac_key, writer_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def key_check(self) -> bytes:
        """A blob stored at creation, to tell a wrong key from damaged data."""
        return self.encrypt(_CHECK_PLAINTEXT, b"sigedge/key-check")

    def matches(self, check_blob: bytes) -> bool:
        """Does this cipher's key open the gallery's key-check blob?"""
        try:
            return self.decrypt(check_blob, b"sigedge/key-check") == _CHECK_PLAINTEXT
        except GalleryError:
            return False
