"""Exceptions raised by hefl.

Every error of the compiled core maps to one of these classes; each message names what was
expected and what came, e.g. ``submission refused: ciphertext for key id 3f..., expected
9a...``. All derive from :class:`HeflError`; most also derive from the built-in exception a
caller would reach for (``ValueError``, ``OSError``), so existing ``except`` clauses keep
working.

>>> import hefl
>>> issubclass(hefl.KeyMismatchError, hefl.MessageError)
True
>>> issubclass(hefl.InsecureKeyFileError, PermissionError)
True
"""

from __future__ import annotations

__all__ = [
    "HeflError",
    "KeyFileError",
    "KeyFileExistsError",
    "InsecureKeyFileError",
    "MessageError",
    "KeyMismatchError",
    "LengthError",
    "EncodeError",
    "DecodeError",
    "SumFullError",
    "ConfigError",
    "ProtocolError",
    "OutOfOrderError",
    "SnapshotError",
    "StateError",
    "SecureAggError",
    "RosterError",
]


class HeflError(Exception):
    """Base class of every error hefl raises."""


class KeyFileError(HeflError, OSError):
    """A key file cannot be read, written or parsed (missing, malformed, wrong version or
    parameter set, key id that does not match its seed, not a regular file)."""


class KeyFileExistsError(KeyFileError, FileExistsError):
    """Refusing to overwrite an existing key file (pass ``force=True`` to replace it)."""


class InsecureKeyFileError(KeyFileError, PermissionError):
    """The key file (or a secure-aggregation identity file) is readable or writable by group
    or others; ``chmod 600`` it."""


class MessageError(HeflError, ValueError):
    """A ciphertext message was refused: truncated, not a hefl message, another wire version
    or parameter set, another length, or more summands than allowed."""


class KeyMismatchError(MessageError):
    """A ciphertext message made under another key id than the one expected."""


class LengthError(HeflError, ValueError):
    """A vector of another length (or shape) than the envelope or sum was made for."""


class EncodeError(HeflError, ValueError):
    """An update that cannot be encoded (NaN or infinite values) or encrypted."""


class DecodeError(HeflError, ValueError):
    """An aggregate that decrypts to something no valid set of updates sums to (a total
    example count out of range, a value beyond the parties' clip bound). :meth:`Party.receive`
    does not raise it: it skips such a round, as every party does."""


class SumFullError(HeflError, ValueError):
    """A keyless sum already holds ``max_parties`` updates, the most its clients can decode."""


class ConfigError(HeflError, ValueError):
    """A setting that cannot work: bounds no fixed-point encoding or GLWE noise budget fits
    (the message names the settings nearby that do, e.g. the largest ``frac_bits`` for these
    bounds), ``max_parties=0``, a plan that does not validate."""


class ProtocolError(HeflError, ValueError):
    """A published sum a party refuses, changing nothing: a party list that is empty,
    unsorted or repeated, fewer parties than the federation's minimum, or a sum out of order.
    The server broke the protocol, or the party lost its place."""


class OutOfOrderError(ProtocolError):
    """A sum for a later round than the party's next: the sums in between are missing (apply
    them first, or resync from a model snapshot)."""


class SnapshotError(HeflError, ValueError):
    """A model snapshot a party cannot resync from: not a snapshot under this key, another
    run's, another round than announced, older than the party, or a run without snapshots."""


class StateError(HeflError, ValueError):
    """Party state bytes that do not restore into this party: not a party state, another
    format version, another run, another party, another model shape, or too large."""


class SecureAggError(HeflError, ValueError):
    """``strict`` secure aggregation refused to seal: a second seal of a round (a blind is
    never applied to two inputs: resend the sealed bytes instead), or a party not in its
    round's party set (it asks to rejoin)."""


class RosterError(SecureAggError):
    """The roster refused: a fingerprint other than the one compared out of band, a party it
    does not list, an identity that is not its entry for the party, another HE key, a server
    whose settings weaken its policy (no secure aggregation, another party count, a smaller
    minimum), or a malformed roster. The message names what was expected and what came."""
