"""Test helpers that know hefl's wire format (hefl.he.wire)."""

from __future__ import annotations

import numpy as np


def garbage_under_header(upload: bytes, seed: int = 0) -> bytes:
    """The upload with its packed bodies replaced by random bits, its header (key id,
    length, widths, seed) intact: what a malicious key holder can send, and a server without
    the key must accept. Layout (hefl.he.wire): magic and version (10 bytes), the bincode
    header (a length-prefixed parameter-set name, dimension, polynomial size, key id,
    length, summands, body bits, mask bits, seed count), the 16-byte seed, the bodies."""
    name_len = int.from_bytes(upload[10:18], "little")
    at = 18 + name_len + 8 + 8 + 32
    length = int.from_bytes(upload[at : at + 8], "little")
    body_bits = int.from_bytes(upload[at + 12 : at + 16], "little")
    start = at + 8 + 16 + 16
    whole = length * body_bits // 8  # whole bytes of packed values: padding stays zero
    random = np.random.default_rng(seed).bytes(whole)
    return upload[:start] + random + upload[start + whole :]
