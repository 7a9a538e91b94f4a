"""Type stubs of the compiled core ``hefl._hefl`` (re-exported by ``hefl``)."""

from os import PathLike
from typing import Final, final

import numpy as np
import numpy.typing as npt

DEFAULT_MAX_PARTIES: Final[int]
DEFAULT_FRAC_BITS: Final[int]
"""Fractional bits of the fixed-point encoding unless given (16, as ``hefl`` itself: each
value is quantized to a multiple of 2^-16, so a mean is within 2^-16 of the plaintext one)."""
"""Largest number of updates an aggregate may sum unless told otherwise (100)."""

STYPE: Final[str]
"""The ``stype`` of a Flower ``Array`` that carries hefl ciphertext bytes (``"hefl.glwe.v2"``, the wire format version)."""

def generate_key(path: str | PathLike[str], *, force: bool = False) -> str:
    """Write a fresh shared key file at ``path`` and return its public key id.

    The same file as ``hefl keygen --out PATH``: JSON with a 32-byte secret seed, mode 0600,
    written atomically. Refuses to replace an existing file unless ``force``.

    Raises:
        KeyFileExistsError: ``path`` exists and ``force`` is false.
        KeyFileError: the file cannot be written.

    >>> import hefl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "keys", "hefl.key")
    >>> key_id = hefl.generate_key(path)
    >>> len(key_id), oct(os.stat(path).st_mode & 0o777)
    (64, '0o600')

    """

def key_id(path: str | PathLike[str]) -> str:
    """The public key id (64 hex digits) of the key file at ``path``.

    Checks the file as :meth:`SecretKey.load` does (mode, format, parameter set, key id
    against seed) without deriving the secret key. The key id reveals nothing about the key.

    Raises:
        InsecureKeyFileError: group or others can access the file.
        KeyFileError: missing, malformed or for another parameter set.
    """

@final
class SecretKey:
    """The secret key all clients share, derived from a key file.

    Never give one (or its file) to the server: the server needs only :attr:`key_id`.

    >>> import hefl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "hefl.key")
    >>> key_id = hefl.generate_key(path)
    >>> hefl.SecretKey.load(path).key_id == key_id
    True

    """

    @staticmethod
    def load(path: str | PathLike[str]) -> SecretKey:
        """Load and check a key file (mode 0600, format, parameter set, key id) and derive
        the GLWE secret key.

        Raises:
            InsecureKeyFileError: group or others can access the file (``chmod 600`` it).
            KeyFileError: missing, malformed, another version or parameter set.
        """

    @property
    def key_id(self) -> str:
        """The public key id: 64 lowercase hex digits."""

@final
class Envelope:
    """A client's envelope: seals updates of ``length`` values and opens aggregates.

    An update is quantized to fixed point (values clipped to [-8, 8], resolution
    2^-frac_bits, unbiased stochastic rounding) for sums of at most ``max_parties`` updates, weighted, and
    encrypted; the weight travels encrypted in an extra slot. Every client of a federation
    must use the same ``length``, ``max_parties`` and ``frac_bits`` (fractional bits of the
    fixed point: values are rounded, without bias, to multiples of 2^-frac_bits).

    >>> import numpy as np, hefl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "hefl.key")
    >>> _ = hefl.generate_key(path)
    >>> envelope = hefl.Envelope(hefl.SecretKey.load(path), 2, max_parties=3)
    >>> sealed = envelope.seal(np.array([0.5, -1.0], dtype=np.float32), weight=1.0)
    >>> envelope.open(sealed, parties=1)
    array([ 0.5, -1. ], dtype=float32)

    Raises:
        LengthError: ``length`` is 0 or above hefl's limit (2^26 - 1).
        ConfigError: no fixed-point encoding fits ``max_parties`` (e.g. 0).
    """

    def __init__(
        self, key: SecretKey, length: int, *, max_parties: int = 100, frac_bits: int = 16
    ) -> None: ...
    @property
    def length(self) -> int:
        """Values per update."""

    @property
    def max_parties(self) -> int:
        """The most updates an aggregate may sum."""

    @property
    def key_id(self) -> str:
        """The public id of the envelope's key."""

    def seal(self, values: npt.NDArray[np.float32], weight: float = 1.0) -> bytes:
        """Encrypt ``values * weight`` and ``weight``; return the message bytes.

        ``values`` must be a 1-D, C-contiguous float32 array of :attr:`length` values; it is
        copied before the GIL is released. ``weight`` is the update's share in the weighted
        mean, in (0, 1] (FedAvg: the client's examples over a bound every client uses).

        Raises:
            TypeError: not a numpy array, or not float32.
            ValueError: a strided (non-contiguous) array, or a weight outside (0, 1].
            LengthError: not 1-D or not :attr:`length` values.
            EncodeError: a NaN or infinite value.
        """

    def open(self, aggregate: bytes, parties: int) -> npt.NDArray[np.float32]:
        """Decrypt the sum of ``parties`` sealed updates into their weighted mean.

        Checks the message (key id, length, at most ``parties`` summands) and that the
        decrypted sum is one that ``parties`` valid updates can add up to.

        Raises:
            KeyMismatchError: the aggregate is under another key.
            MessageError: truncated, foreign, another length or more summands.
            DecodeError: the total weight or a value is out of range for ``parties``.
            ValueError: ``parties`` outside 1..max_parties.
        """

@final
class KeylessSum:
    """The server's running sum of sealed updates; holds a key id, never a key.

    Each :meth:`add` validates the message exactly as ``hefl serve`` does (magic, wire
    version, parameter set, GLWE shape, key id, length, one summand, exact body length) and
    adds it homomorphically; a refused message leaves the sum unchanged.

    >>> import numpy as np, hefl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "hefl.key")
    >>> key_id = hefl.generate_key(path)
    >>> envelope = hefl.Envelope(hefl.SecretKey.load(path), 2, max_parties=2)
    >>> total = hefl.KeylessSum(key_id, 2, max_parties=2)
    >>> total.add(envelope.seal(np.array([1, 2], dtype=np.float32), 0.5))
    >>> total.add(envelope.seal(np.array([3, 4], dtype=np.float32), 0.5))
    >>> envelope.open(total.to_bytes(), parties=total.count)
    array([2., 3.], dtype=float32)

    Raises:
        ValueError: ``key_id`` is not 64 hex digits.
        LengthError: ``length`` is 0 or above hefl's limit.
        ConfigError: no fixed-point encoding fits ``max_parties``.
    """

    def __init__(
        self, key_id: str, length: int, *, max_parties: int = 100, frac_bits: int = 16
    ) -> None: ...
    def add(self, message: bytes) -> None:
        """Validate one sealed update and add it.

        Raises:
            KeyMismatchError: made under another key.
            MessageError: truncated, foreign bytes, another length or wire version.
            SumFullError: the sum already holds ``max_parties`` updates.
        """

    @property
    def count(self) -> int:
        """Updates added so far."""

    @property
    def length(self) -> int:
        """Values per update."""

    @property
    def key_id(self) -> str:
        """The key id every update must be under."""

    @property
    def max_message_len(self) -> int:
        """An upper bound on the size of a valid update, to check before reading one."""

    def to_bytes(self) -> bytes:
        """The aggregate's message bytes, for clients to :meth:`Envelope.open`.

        Raises:
            ValueError: nothing was added yet.
        """

    def __len__(self) -> int: ...
