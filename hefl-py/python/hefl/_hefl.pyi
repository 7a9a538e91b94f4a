"""Type stubs of the compiled core ``hefl._hefl`` (re-exported by ``hefl``)."""

from os import PathLike
from collections.abc import Sequence
from typing import Final, Literal, final

import numpy as np
import numpy.typing as npt

DEFAULT_MAX_PARTIES: Final[int]
"""Largest number of updates an aggregate may sum unless told otherwise (100)."""

DEFAULT_FRAC_BITS: Final[int]
"""Fractional bits of the fixed-point encoding unless given (16, as ``hefl`` itself: each
value of an update is rounded, without bias, to a multiple of 2^-16, so each value of a mean
is within 2^-16 of the exact weighted mean of the clipped updates)."""

CLIP: Final[float]
"""Every value of an update is clipped to [-CLIP, CLIP] (8.0) before it is encoded."""

STYPE: Final[str]
"""The ``stype`` of a Flower ``Array`` that carries hefl ciphertext bytes (``"hefl.glwe.v2"``:
it names the wire format version)."""

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

def run_fingerprint(
    key_id: str,
    length: int,
    *,
    max_parties: int,
    max_examples: int,
    frac_bits: int = 16,
    min_parties: int = 1,
    snapshot_every: int | None = None,
    run: str = "",
    roster_fingerprint: str | None = None,
) -> str:
    """The fingerprint (64 hex digits) of a run of :class:`Party` objects made with these
    settings: what their uploads' headers name, and what a server's
    ``KeylessSum(..., run=...)`` checks. The same value as :attr:`Party.fingerprint`.

    A hash of public values only (the key id, the bounds, ``min_parties``,
    ``snapshot_every``, the run's public name ``run`` and, for parties of ``strict`` secure
    aggregation, their roster's fingerprint): it tells the server nothing it does not know.

    Raises:
        ValueError: ``key_id`` is not 64 hex digits.
        RosterError: ``roster_fingerprint`` is not 64 hex digits.
    """

def generate_identity(path: str | PathLike[str], *, force: bool = False) -> str:
    """Write a fresh identity file for ``strict`` secure aggregation at ``path`` and return
    its public line (``hefl-x25519-v1 <64 hex>``), for the coordinator's :class:`Roster`.

    The same file as ``hefl identity --out PATH``: an X25519 key pair drawn from tfhe's
    CSPRNG, JSON, mode 0600, written atomically. Refuses to replace an existing file unless
    ``force``. The public line reveals nothing about the secret.

    Raises:
        KeyFileExistsError: ``path`` exists and ``force`` is false.
        KeyFileError: the file cannot be written.

    >>> import hefl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "party-0.id")
    >>> line = hefl.generate_identity(path)
    >>> line.split()[0], len(line.split()[1]), oct(os.stat(path).st_mode & 0o777)
    ('hefl-x25519-v1', 64, '0o600')
    >>> hefl.Identity.load(path).public == line
    True

    """

@final
class Identity:
    """A party's identity for ``strict`` secure aggregation: an X25519 static key pair from
    a file of mode 0600 (``hefl identity`` or :func:`generate_identity`). The secret stays in
    Rust memory, is never printed, and is wiped when the object is freed."""

    @staticmethod
    def load(path: str | PathLike[str]) -> Identity:
        """Load and check an identity file.

        Raises:
            InsecureKeyFileError: group or others can access the file.
            KeyFileError: missing, malformed, another version, or a public key that is not
                its secret's.
        """

    @property
    def public(self) -> str:
        """The public line, ``hefl-x25519-v1 <64 hex>``."""

@final
class Roster:
    """The trust anchor of ``strict`` secure aggregation: the HE key id, every party's X25519
    public key (party i's at index i) and the policy (the mode, the party count, the fewest
    parties in a published sum). Every party compares its :attr:`fingerprint` out of band
    with the coordinator's; the server only relays, and a server whose settings weaken the
    policy is refused by the parties, never the reverse.

    >>> import hefl, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> key_id = hefl.generate_key(os.path.join(folder, "hefl.key"))
    >>> lines = [hefl.generate_identity(os.path.join(folder, f"p{i}.id")) for i in range(3)]
    >>> roster = hefl.Roster(key_id, lines, min_parties=2)
    >>> roster.parties, roster.min_parties, roster.mode, len(roster.fingerprint)
    (3, 2, 'strict', 64)
    >>> roster.party_of(hefl.Identity.load(os.path.join(folder, "p2.id")))
    2
    >>> hefl.Roster.from_bytes(roster.to_bytes()).fingerprint == roster.fingerprint
    True
    >>> try:  # a fingerprint other than the coordinator's
    ...     roster.check_fingerprint("00" * 32)
    ... except hefl.RosterError as error:
    ...     print(str(error).replace(roster.fingerprint, "<found>").replace("0" * 64, "<expected>"))
    roster fingerprint <found> is not the expected <expected>: this is not the roster your coordinator sent

    """

    def __init__(
        self,
        key_id: str,
        publics: Sequence[str],
        *,
        min_parties: int | None = None,
        secure_agg: Literal["strict"] = "strict",
    ) -> None:
        """The roster of the parties whose public lines are ``publics`` for the HE key
        ``key_id``, each sum of at least ``min_parties`` (2 to ``len(publics)``; default:
        all): what ``hefl roster`` assembles.

        Raises:
            RosterError: a public line that does not parse, two parties with one key, or a
                ``min_parties`` outside 2 to ``len(publics)``.
            ValueError: ``key_id`` is not 64 hex digits, or another mode than ``"strict"``.
        """

    @staticmethod
    def load(path: str | PathLike[str]) -> Roster:
        """Read and validate a roster file (``hefl roster --out PATH``).

        Raises:
            KeyFileError: the file cannot be read, or is too large.
            RosterError: not a valid roster.
        """

    @staticmethod
    def from_bytes(data: bytes) -> Roster:
        """Parse and validate a roster file's contents.

        Raises:
            RosterError: not a valid roster.
        """

    def to_bytes(self) -> bytes:
        """The roster file's contents (JSON; its fingerprint hashes a canonical form)."""

    @property
    def fingerprint(self) -> str:
        """The roster's SHA-256 fingerprint, 64 hex digits: compare it out of band. A hash of
        public data, so it leaks nothing."""

    @property
    def key_id(self) -> str:
        """The HE key id the roster is for."""

    @property
    def mode(self) -> str:
        """The secure aggregation mode (``"strict"``)."""

    @property
    def parties(self) -> int:
        """Parties in the roster: ids 0 to ``parties - 1``."""

    @property
    def min_parties(self) -> int:
        """The fewest parties a published sum may hold: the privacy floor."""

    def check_fingerprint(self, expected: str) -> None:
        """Refuse this roster unless its fingerprint is ``expected``.

        Raises:
            RosterError: another fingerprint (the message names both), or not 64 hex digits.
        """

    def party_of(self, identity: Identity) -> int:
        """The party id the roster gives ``identity`` (the party numbering is the roster's,
        never the server's).

        Raises:
            RosterError: the roster does not list this identity's public key.
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

    An update's values are clipped to [-8, 8] (:data:`CLIP`) and rounded, without bias, to
    multiples of 2^-frac_bits; the rounded update z and the client's integer example count n
    travel as n·z and n, encrypted. A sum of at most ``max_parties`` updates opens into
    Σn·z / Σn, exact in integers: each value of the mean is within 2^-frac_bits of the exact
    example-weighted mean of the clipped updates (then rounded to float32), whatever
    ``max_examples`` is. A larger ``max_examples`` or ``max_parties`` costs bits on the wire
    instead, and bounds that the fixed point or the GLWE noise budget cannot hold are refused
    with :class:`ConfigError`, naming the settings nearby that fit.

    Every client of a federation and its server must use the same ``length``,
    ``max_parties``, ``max_examples`` and ``frac_bits``.

    >>> import numpy as np, hefl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "hefl.key")
    >>> key_id = hefl.generate_key(path)
    >>> envelope = hefl.Envelope(hefl.SecretKey.load(path), 2, max_parties=3)
    >>> sealed = envelope.seal(np.array([0.5, -1.0], dtype=np.float32), party=0)
    >>> total = hefl.KeylessSum(key_id, 2, max_parties=3)  # the server
    >>> total.add(sealed, 0)
    >>> envelope.open(total.to_bytes(), parties=[0])
    array([ 0.5, -1. ], dtype=float32)

    Raises:
        LengthError: ``length`` is 0 or above hefl's limit (2^26 - 1).
        ConfigError: the bounds do not fit (e.g. ``max_parties=0``, or ``max_examples``
            too large for ``max_parties`` and ``frac_bits``).
    """

    def __init__(
        self,
        key: SecretKey,
        length: int,
        *,
        max_parties: int = 100,
        max_examples: int = 1,
        frac_bits: int = 16,
    ) -> None: ...
    @property
    def length(self) -> int:
        """Values per update."""

    @property
    def max_parties(self) -> int:
        """The most updates an aggregate may sum."""

    @property
    def max_examples(self) -> int:
        """The largest example count an update may carry."""

    @property
    def frac_bits(self) -> int:
        """Fractional bits of the fixed point: the resolution is 2^-frac_bits."""

    @property
    def key_id(self) -> str:
        """The public id of the envelope's key."""

    def seal(
        self,
        values: npt.NDArray[np.float32],
        examples: int = 1,
        *,
        party: int,
        round: int = 0,
        run: str | None = None,
    ) -> bytes:
        """Clip, round and encrypt ``values`` weighted by ``examples``, as party ``party``'s
        update for round ``round`` of run ``run``; return the bytes.

        The header names ``run`` (64 hex digits, such as :func:`run_fingerprint`; ``None``:
        all zero), ``round`` and ``party``, in the clear: a :class:`KeylessSum` refuses an
        update that names another run, round or party, so a copied or replayed upload is
        refused rather than counted as someone else's. These are public values the server
        knows anyway.

        ``values`` must be a 1-D, C-contiguous float32 array of :attr:`length` values; it is
        copied before the GIL is released. ``examples`` is the update's weight in the mean:
        an integer from 1 to :attr:`max_examples` (FedAvg: the client's training examples).

        Raises:
            TypeError: not a numpy array, or not float32.
            ValueError: a strided (non-contiguous) array.
            LengthError: not 1-D or not :attr:`length` values.
            EncodeError: a NaN or infinite value, or ``examples`` outside 1..max_examples.
            OverflowError: a negative ``examples``.
        """

    def open(
        self,
        aggregate: bytes,
        parties: Sequence[int],
        *,
        round: int = 0,
        run: str | None = None,
    ) -> npt.NDArray[np.float32]:
        """Decrypt the sum of the updates of ``parties`` into their example-weighted mean.

        The aggregate must name ``run`` and ``round`` (as the :class:`KeylessSum` that made
        it does): a sum of another round or run is refused before decryption.

        ``parties`` are the ids of the parties in the sum, distinct and ascending (at most
        :attr:`max_parties`). Checks the message (key id, length, as many summands as
        parties) and that the decrypted sum is one that valid updates can add up to.

        Raises:
            KeyMismatchError: the aggregate is under another key.
            MessageError: truncated, foreign, another length or another number of summands,
                or a sum of another round or run.
            DecodeError: the total example count or a value is out of range for ``parties``.
            ValueError: ``parties`` empty, unsorted, repeated or longer than max_parties.
        """

@final
class KeylessSum:
    """The server's running sum of sealed updates; holds a key id, never a key.

    Each :meth:`add` validates the message exactly as ``hefl serve`` does (magic, wire
    version, parameter set, GLWE shape, key id, length, one summand, exact body length) and
    adds it homomorphically; a refused message leaves the sum unchanged. The bounds must be
    the clients' (they size the ciphertexts).

    >>> import numpy as np, hefl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "hefl.key")
    >>> key_id = hefl.generate_key(path)
    >>> envelope = hefl.Envelope(hefl.SecretKey.load(path), 2, max_parties=2, max_examples=10)
    >>> total = hefl.KeylessSum(key_id, 2, max_parties=2, max_examples=10)
    >>> total.add(envelope.seal(np.array([1, 2], dtype=np.float32), examples=3, party=0), 0)
    >>> b = envelope.seal(np.array([3, 4], dtype=np.float32), examples=1, party=1)
    >>> total.add(b, 0)  # party 1's update handed in as party 0's
    Traceback (most recent call last):
    ...
    hefl.errors.MessageError: submission refused: a message for party 1, round 0, run 000000000000, expected party 0, round 0, run 000000000000
    >>> total.add(b, 1)
    >>> envelope.open(total.to_bytes(), parties=[0, 1])
    array([1.5, 2.5], dtype=float32)

    Raises:
        ValueError: ``key_id`` is not 64 hex digits.
        LengthError: ``length`` is 0 or above hefl's limit.
        ConfigError: the bounds do not fit (see :class:`Envelope`).
    """

    def __init__(
        self,
        key_id: str,
        length: int,
        *,
        max_parties: int = 100,
        max_examples: int = 1,
        frac_bits: int = 16,
        round: int = 0,
        run: str | None = None,
        secure_agg: Literal["strict"] | None = None,
    ) -> None:
        """An empty sum of round ``round`` of run ``run`` (64 hex digits:
        :func:`run_fingerprint` of the parties' settings; ``None``: all zero). With
        ``secure_agg="strict"`` updates carry the two canary slots of secure aggregation
        (the sum still never sees a key or a plaintext)."""

    def add(self, message: bytes, party: int) -> None:
        """Validate one sealed update as party ``party``'s for this sum's run and round
        (what its header must name) and add it.

        Raises:
            KeyMismatchError: made under another key.
            MessageError: truncated, foreign bytes, another length or wire version, or an
                update that names another run, round or party (a copy or a replay).
            SumFullError: the sum already holds ``max_parties`` updates.
        """

    def check_snapshot(self, snapshot: bytes, round: int, party: int) -> None:
        """Validate party ``party``'s model snapshot of its model before round ``round`` of
        this sum's run (one encryption under the key, of a snapshot's length and widths),
        as ``hefl serve`` does; the sum is unchanged. The server cannot read it: parties
        check what is inside when they :meth:`Party.resync`.

        Raises:
            KeyMismatchError: made under another key.
            MessageError: not a snapshot of this federation's shape, or one that names
                another run, round or party.
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
        """The aggregate's message bytes, for clients to :meth:`Envelope.open` or
        :meth:`Party.receive`.

        Raises:
            ValueError: nothing was added yet.
        """

    def __len__(self) -> int: ...

@final
class Party:
    """One party's side of a federation, without I/O: the machine ``hefl join`` runs.

    A party holds the global model (which every party holds identically) and the round it is
    on. It seals its update for that round (:meth:`seal_model`, :meth:`seal`), takes each
    round's published sum with the ids of the parties in it (:meth:`receive`) and applies
    the sums in order, each once: an earlier round's is "stale" and changes nothing, a later
    one is refused (:class:`OutOfOrderError`: apply the missing ones first, or resync). A
    sum that no valid updates add up to (some party sent garbage) is "skipped", on every
    party alike. A party further behind than the sums a server keeps resyncs from an
    encrypted model snapshot (:meth:`snapshot`, :meth:`resync`): the model's float32 bits as
    integers, so the resynced model is bit-identical. :meth:`state` and :meth:`restore`
    checkpoint it.

    The constructor makes a party of a Flower-style federation, sized from its bounds:
    updates of ``len(initial)`` values, sums of at most ``max_parties`` updates weighted by
    integer example counts of at most ``max_examples`` (see :class:`Envelope` for the
    encoding and its error bound), values clipped to [-8, 8], each published sum holding at
    least ``min_parties`` updates, the mean update added to the model. ``party`` is this
    party's id (any int below 2^32 - 1; the strategy assigns them); ``run`` is a public
    label of the run (``hefl.flower`` passes Flower's run id). The run's fingerprint (a
    SHA-256 of these public settings and the key id) tells this run's checkpoints and
    snapshots from another's. ``seed`` makes the unbiased rounding reproducible (the
    rounding protects nothing: values are encrypted afterwards); by default it is seeded
    from the OS.

    ``strict`` secure aggregation: ``identity``, ``roster`` and ``roster_fingerprint`` (the
    fingerprint compared out of band) make a party that adds pairwise blinds and two canaries
    to every update, keyed with every other party of the roster, and accepts only sums of its
    round's whole party set whose canaries hold (any other is skipped). ``secure_agg`` is what
    the server runs (``"strict"`` or ``None``): the party refuses settings weaker than its
    roster's policy (``None``, a ``max_parties`` other than the roster's party count, a
    ``min_parties`` below its minimum), a key other than the roster's, and a ``party`` whose
    roster entry is not ``identity``. Each round is sealed at most once (:meth:`seal` again
    returns the same bytes until the round's outcome is received; the checkpoint keeps them).
    Rounds may then be void (:meth:`receive` with ``void=True``: nobody steps), and every
    outcome announces the next round's party set; a party not in it (:attr:`is_member`) must
    not seal, and asks to be put back in a later set.

    >>> import numpy as np, hefl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "hefl.key")
    >>> key_id = hefl.generate_key(path)
    >>> key = hefl.SecretKey.load(path)
    >>> bounds = dict(max_parties=3, max_examples=100, snapshot_every=1)
    >>> a = hefl.Party(key, np.zeros(2, np.float32), party=0, **bounds)
    >>> b = hefl.Party(key, np.zeros(2, np.float32), party=5, **bounds)
    >>> up_a, clipped = a.seal_model(np.array([1.0, 20.0], np.float32), examples=30)
    >>> clipped  # 20 is beyond the clip, 8
    1
    >>> up_b, _ = b.seal_model(np.array([3.0, 0.0], np.float32), examples=10)
    >>> run = hefl.run_fingerprint(key_id, 2, max_parties=3, max_examples=100, snapshot_every=1)
    >>> run == a.fingerprint  # what the uploads name: public settings, hashed
    True
    >>> total = hefl.KeylessSum(key_id, 2, max_parties=3, max_examples=100, run=run)  # the server
    >>> total.add(up_a, 0); total.add(up_b, 5)
    >>> for party in (a, b):
    ...     party.receive(0, [0, 5], total.to_bytes())
    ('applied', None)
    ('applied', None)
    >>> a.model, a.next_round
    (array([1.5, 6. ], dtype=float32), 1)
    >>> round_, snapshot = a.snapshot()              # encrypted: the server keeps it
    >>> late = hefl.Party(key, np.zeros(2, np.float32), party=9, **bounds)
    >>> late.resync(round_, snapshot)
    >>> late.model.tobytes() == a.model.tobytes(), late.next_round
    (True, 1)

    Raises:
        KeyMismatchError: ``key`` is not the one this federation's sums are under.
        LengthError: ``initial`` is empty or longer than hefl's limit.
        ConfigError: the bounds do not fit (the message names nearby settings that do),
            or ``min_parties`` is 0 or above ``max_parties``.
        RosterError: the roster's fingerprint is not ``roster_fingerprint``, the settings
            weaken its policy, ``secure_agg`` without an identity and roster, the key or
            ``party`` is not the roster's (each message names what was expected and found).
        ValueError: only some of ``identity``, ``roster`` and ``roster_fingerprint``.
    """

    def __init__(
        self,
        key: SecretKey,
        initial: npt.NDArray[np.float32],
        *,
        max_parties: int,
        max_examples: int,
        party: int,
        frac_bits: int = 16,
        min_parties: int = 1,
        snapshot_every: int | None = None,
        run: str = "",
        seed: int | None = None,
        secure_agg: Literal["strict"] | None = None,
        identity: Identity | None = None,
        roster: Roster | None = None,
        roster_fingerprint: str | None = None,
    ) -> None: ...
    @staticmethod
    def from_plan(plan_json: str, party: int, key: SecretKey | None = None) -> Party:
        """Party ``party`` of a hefl plan (the JSON ``hefl serve`` hands every party), as
        ``hefl join`` runs it: the plan's initial model, encoding, rules and rounding
        generator. ``key`` is the shared key in ``he`` mode, ``None`` in the clear modes.

        Raises:
            ConfigError: not a plan, a plan that does not validate, or ``party`` not in it.
            KeyMismatchError: ``key`` is not the one the plan names.
        """

    @property
    def model(self) -> npt.NDArray[np.float32]:
        """A copy of the global model (float32)."""

    @property
    def next_round(self) -> int:
        """The round this party is on: the next whose sum it applies (0 at the start)."""

    @property
    def skipped(self) -> list[int]:
        """Rounds skipped so far: their sums were not sums of valid updates."""

    @property
    def voided(self) -> list[int]:
        """Rounds that were void so far (``strict`` secure aggregation)."""

    @property
    def is_member(self) -> bool:
        """Whether this party is in its next round's party set: always without secure
        aggregation. A party that is not (it missed a round, or resynced) must not seal; it
        asks to be put back in a later round's set."""

    @property
    def party(self) -> int:
        """This party's id."""

    @property
    def length(self) -> int:
        """Values of the model (and of every update)."""

    @property
    def fingerprint(self) -> str:
        """The run's fingerprint, 64 hex digits: public (a hash of public settings)."""

    def seal_model(
        self, trained: npt.NDArray[np.float32], examples: int
    ) -> tuple[bytes, int]:
        """Seal the update ``trained - model`` (float32, value by value) for the round this
        party is on, weighted by ``examples`` (1 to ``max_examples``); return the bytes to
        send and how many of the update's values were beyond the clip (8) and clipped.

        With ``strict`` secure aggregation a round is sealed once: sealing it again returns
        the same bytes (whatever ``trained``), until its outcome is received.

        Raises:
            TypeError, ValueError, LengthError: as :meth:`Envelope.seal`, for ``trained``.
            EncodeError: a NaN or infinite value, or ``examples`` out of range.
            SecureAggError: ``strict``: this party is not in its round's party set
                (:attr:`is_member`), or the round was sealed before a checkpoint it was
                restored from and its bytes are gone.
        """

    def seal(self, update: npt.NDArray[np.float32], examples: int) -> tuple[bytes, int]:
        """Seal ``update`` (a model delta in Flower-style federations, a gradient in a
        FedSGD plan) for the round this party is on; as :meth:`seal_model`."""

    def receive(
        self,
        round: int,
        parties: Sequence[int],
        aggregate: bytes,
        *,
        void: bool = False,
        next_set: Sequence[int] | None = None,
    ) -> tuple[Literal["applied", "skipped", "stale", "void"], str | None]:
        """Take round ``round``'s published sum ``aggregate`` of the updates of ``parties``
        (their ids, ascending). Returns ``("applied", None)`` (the model moved), ``("skipped",
        reason)`` (no valid updates add up to the sum: the model stays, as on every party;
        report it) or ``("stale", None)`` (an earlier round: nothing changed).

        ``strict`` secure aggregation: ``void=True`` is a round without a sum (a member of its
        set failed): ``("void", None)``, nobody steps and this party's update for it is
        dropped (``aggregate`` is ignored). ``next_set`` is the next round's party set,
        announced with this outcome (``None``: unchanged); it is checked against the roster
        and decides :attr:`is_member`. A sum whose party list is not the round's set, or whose
        canaries fail (a lone ciphertext, a subset sum, another round's sum), is skipped.

        Raises (nothing changed):
            OutOfOrderError: a round after :attr:`next_round`.
            ProtocolError: ``parties`` empty, unsorted, repeated, or fewer than the minimum;
                a ``next_set`` outside the roster or below its minimum; ``void`` in a run
                without secure aggregation.
            KeyMismatchError: the sum is under another key.
            MessageError: the sum does not parse as this federation's (length, summands).
        """

    def snapshot(self) -> tuple[int, bytes]:
        """The model snapshot of this party (before round :attr:`next_round`), encrypted
        under the shared key: its round and bytes, for a server to keep and a party far
        behind to :meth:`resync` from. A key holder could poison a snapshot as it could an
        update; a resyncing party checks it decrypts to this run's fingerprint and the round
        announced, and holds a model of this shape.

        Raises:
            SnapshotError: the run takes no snapshots (``snapshot_every=None``).
        """

    def resync(self, round: int, snapshot: bytes) -> None:
        """Take the model and round of ``snapshot``, announced by the server as of
        ``round``; the sums from that round on are then applied as they come.

        Raises (nothing changed):
            SnapshotError: not a snapshot of this run under this key, another round than
                announced, older than this party, or a run without snapshots.
            KeyMismatchError, MessageError: bytes that do not parse as a snapshot.
            StateError: a snapshot of another model shape.
        """

    def state(self) -> bytes:
        """This party's checkpoint: the model in the clear, its round, skipped rounds and
        rounding generator. Keep it where the key is (never on the server)."""

    def restore(self, state: bytes) -> None:
        """Continue from a checkpoint of :meth:`state` (untrusted: read within a bound of
        the model's size).

        Raises:
            StateError: not a party state, too large, another run's, another party's, or of
                another model shape.
        """
