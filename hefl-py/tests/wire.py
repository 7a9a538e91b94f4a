"""Test helpers that know hefl's wire format (hefl.he.wire)."""

from __future__ import annotations

import numpy as np


def _header_at(upload: bytes) -> int:
    """Where the plaintext length starts: after magic and version (10 bytes), the
    length-prefixed parameter-set name, dimension, polynomial size and key id."""
    name_len = int.from_bytes(upload[10:18], "little")
    return 18 + name_len + 8 + 8 + 32


def body_bits(upload: bytes) -> int:
    """The bits per value of an upload's packed bodies, from its header."""
    at = _header_at(upload)
    return int.from_bytes(upload[at + 12 : at + 16], "little")


def garbage_under_header(upload: bytes, seed: int = 0) -> bytes:
    """The upload with its packed bodies replaced by random bits, its header (key id,
    length, widths, seed) intact: what a malicious key holder can send, and a server without
    the key must accept. Layout (hefl.he.wire): magic and version (10 bytes), the bincode
    header (a length-prefixed parameter-set name, dimension, polynomial size, key id,
    length, summands, body bits, mask bits, seed count, the context: run, round, party), the
    16-byte seed, the bodies."""
    at = _header_at(upload)
    length = int.from_bytes(upload[at : at + 8], "little")
    body_bits = int.from_bytes(upload[at + 12 : at + 16], "little")
    start = at + 8 + 4 * 4 + (32 + 8 + 4) + 16
    whole = length * body_bits // 8  # whole bytes of packed values: padding stays zero
    random = np.random.default_rng(seed).bytes(whole)
    return upload[:start] + random + upload[start + whole :]
