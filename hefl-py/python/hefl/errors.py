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
]


class HeflError(Exception):
    """Base class of every error hefl raises."""


class KeyFileError(HeflError, OSError):
    """A key file cannot be read, written or parsed (missing, malformed, wrong version or
    parameter set, key id that does not match its seed, not a regular file)."""


class KeyFileExistsError(KeyFileError, FileExistsError):
    """Refusing to overwrite an existing key file (pass ``force=True`` to replace it)."""


class InsecureKeyFileError(KeyFileError, PermissionError):
    """The key file is readable or writable by group or others; ``chmod 600`` it."""


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
    weight out of range, a value beyond the parties' clip bound)."""


class SumFullError(HeflError, ValueError):
    """A keyless sum already holds ``max_parties`` updates, the most its clients can decode."""


class ConfigError(HeflError, ValueError):
    """A setting no fixed-point encoding can honour (e.g. ``max_parties=0``)."""
