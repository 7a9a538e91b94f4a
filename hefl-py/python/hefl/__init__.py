"""hefl: federated learning with homomorphically encrypted aggregation.

Clients share one secret key; each seals its update (a float32 vector and a weight) into
packed GLWE ciphertext bytes; a server that holds **no key** validates and adds those bytes;
every client opens the sum into the weighted mean. The server sees ciphertexts, a public key
id and counts, never a plaintext update, nor the clients' weights (they travel encrypted in
the last slot).

Threat model: an honest-but-curious server that does not collude with clients. Anyone
holding the shared key can decrypt any single update, so the server must never see the key
and clients must not see each other's individual ciphertexts.

A round in five lines:

>>> import numpy as np, hefl, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "hefl.key")
>>> key_id = hefl.generate_key(path)            # once, then copy to every client
>>> key = hefl.SecretKey.load(path)             # on each client
>>> envelope = hefl.Envelope(key, 3, max_parties=2)
>>> a = envelope.seal(np.array([1, 2, 3], dtype=np.float32), weight=0.25)
>>> b = envelope.seal(np.array([5, 6, -1], dtype=np.float32), weight=0.75)
>>> total = hefl.KeylessSum(key_id, 3, max_parties=2)   # on the server: no key
>>> total.add(a); total.add(b)
>>> envelope.open(total.to_bytes(), parties=2)
array([4., 5., 0.], dtype=float32)

``hefl.flower`` (``pip install hefl[flower]``) plugs this into Flower: ``HeflMod`` for the
ClientApp and ``HeFedAvg`` for the ServerApp.
"""

from __future__ import annotations

from ._hefl import (
    DEFAULT_FRAC_BITS,
    DEFAULT_MAX_PARTIES,
    STYPE,
    Envelope,
    KeylessSum,
    SecretKey,
    generate_key,
    key_id,
)
from .errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    HeflError,
    InsecureKeyFileError,
    KeyFileError,
    KeyFileExistsError,
    KeyMismatchError,
    LengthError,
    MessageError,
    SumFullError,
)

__all__ = [
    "DEFAULT_FRAC_BITS",
    "DEFAULT_MAX_PARTIES",
    "STYPE",
    "Envelope",
    "KeylessSum",
    "SecretKey",
    "generate_key",
    "key_id",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "HeflError",
    "InsecureKeyFileError",
    "KeyFileError",
    "KeyFileExistsError",
    "KeyMismatchError",
    "LengthError",
    "MessageError",
    "SumFullError",
]
