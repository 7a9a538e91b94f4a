"""hefl: federated learning with homomorphically encrypted aggregation.

Clients share one secret key; each seals its update (a float32 vector and its integer example
count) into packed GLWE ciphertext bytes; a server that holds **no key** validates and adds
those bytes; every client opens the sum into the example-weighted mean. The server sees
ciphertexts, a public key id and who is in each sum, never a plaintext update, nor the
clients' example counts (they travel encrypted in the last slot).

Threat model: an honest-but-curious server that does not collude with clients. Anyone
holding the shared key can decrypt any single update, so the server must never see the key
and clients must not see each other's individual ciphertexts. A client holding the key can
poison its own update; a sum that no valid updates add up to is skipped by every party alike.

A round in a few lines:

>>> import numpy as np, hefl, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "hefl.key")
>>> key_id = hefl.generate_key(path)            # once, then copy to every client
>>> key = hefl.SecretKey.load(path)             # on each client
>>> envelope = hefl.Envelope(key, 3, max_parties=2, max_examples=100)
>>> a = envelope.seal(np.array([1, 2, 3], dtype=np.float32), examples=25, party=0)
>>> b = envelope.seal(np.array([5, 6, -1], dtype=np.float32), examples=75, party=1)
>>> total = hefl.KeylessSum(key_id, 3, max_parties=2, max_examples=100)  # server: no key
>>> total.add(a, 0); total.add(b, 1)
>>> envelope.open(total.to_bytes(), parties=[0, 1])
array([4., 5., 0.], dtype=float32)

:class:`Party` is one party's whole side of a federation (the machine ``hefl join`` runs):
it seals updates for the round it is on, applies published sums in order (skipping one that
no valid updates add up to), resyncs from encrypted model snapshots and checkpoints itself.
``hefl.flower`` (``pip install hefl[flower]``) drives it from Flower: ``HeflMod`` for the
ClientApp and ``HeFedAvg`` for the ServerApp.

With ``strict`` secure aggregation (:class:`Identity`, :class:`Roster`, and
``Party(..., secure_agg="strict", identity=..., roster=..., roster_fingerprint=...)``) each
party also adds pairwise blinds inside the encrypted plaintext, keyed by X25519 between the
parties of a roster compared out of band: they cancel in the sum of a round's whole party
set, so one party's ciphertext decrypted with the shared key is noise to anyone missing one of
its partners' secrets. See ``docs/security.md`` for the threat model with and without it.
"""

from __future__ import annotations

from ._hefl import (
    CLIP,
    DEFAULT_FRAC_BITS,
    DEFAULT_MAX_PARTIES,
    STYPE,
    Envelope,
    Identity,
    KeylessSum,
    Party,
    Roster,
    SecretKey,
    generate_identity,
    generate_key,
    key_id,
    run_fingerprint,
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
    OutOfOrderError,
    ProtocolError,
    RosterError,
    SecureAggError,
    SnapshotError,
    StateError,
    SumFullError,
)

__all__ = [
    "CLIP",
    "DEFAULT_FRAC_BITS",
    "DEFAULT_MAX_PARTIES",
    "STYPE",
    "Envelope",
    "Identity",
    "KeylessSum",
    "Party",
    "Roster",
    "SecretKey",
    "generate_identity",
    "generate_key",
    "key_id",
    "run_fingerprint",
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
    "OutOfOrderError",
    "ProtocolError",
    "RosterError",
    "SecureAggError",
    "SnapshotError",
    "StateError",
    "SumFullError",
]
