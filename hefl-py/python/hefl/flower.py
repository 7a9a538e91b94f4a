"""HE FedAvg for Flower: the server sums ciphertexts and never holds a key or a model.

Two pieces, used together (``pip install hefl[flower]``):

* :class:`HeflMod`, a ClientApp mod: ``ClientApp(mods=[HeflMod()])``. Each node runs one
  :class:`hefl.Party`, the party machine ``hefl join`` runs, and keeps it in
  ``Context.state`` (which never leaves the node): the machine applies the encrypted
  aggregates the server sends, in order, skips an impossible one, resyncs from an encrypted
  model snapshot, and seals the node's update. Your ``@app.train`` / ``@app.evaluate``
  functions get ordinary arrays under ``"arrays"``; a train reply (your trained model and
  ``num-examples``) is replaced by one ciphertext.
* :class:`HeFedAvg`, a ``flwr.serverapp.strategy.FedAvg`` for the ServerApp. It adds the
  encrypted updates with :class:`hefl.KeylessSum` (validated as ``hefl serve`` validates
  them), keeps the aggregates since the latest model snapshot, and sends each node what it
  lacks. Every upload's header names the run (:func:`hefl.run_fingerprint` of the public
  settings and Flower's run id), the round and the node's party number: an update copied
  into another node's reply, or replayed into a later round or run, is refused.

hefl differs from Flower's FedAvg on purpose: the strategy's "apply" step runs on every node,
because the server cannot read an update. All nodes start from the same public initial
arrays and apply the same aggregates in the same order, so their models stay bit-identical
while the server holds only ciphertext. ``Result.arrays`` of :meth:`HeFedAvg.start` is
therefore empty: the model lives on the nodes (see "The model" below).

**What the server sees**: ciphertexts, the public key id, the public initial arrays, which
nodes are in each sum, each node's round, how many values each node clipped, which rounds
nodes skipped and why, and the metrics you whitelist. Not any update, any model after round
0, any node's number of examples (it travels encrypted inside the update), nor any metric you
did not whitelist.

**The key** reaches a node only from its node config (``flower-supernode --node-config
"hefl-key='/path/to/hefl.key'"``) or the ``HEFL_KEY`` environment variable of the SuperNode,
both naming a key file of mode 0600 (``hefl.generate_key`` or ``hefl keygen``). It is never
read from ``run_config``, which the ServerApp sees too; a ``hefl-key`` entry there is refused.

**Encoding, and the error bound.** A node's update is its trained model minus the global
model (float32, value by value). Each value is clipped to [-8, 8] (:data:`hefl.CLIP`; values
beyond are clipped, counted in the node's log and in its reply's metrics as
``hefl.clipped``) and rounded without bias to a multiple of 2^-frac_bits; the node sends it
multiplied by its integer ``num-examples``, and ``num-examples`` itself, encrypted. The sum
of these integers is exact, so **each value of a round's mean update is within 2^-frac_bits
of the exact num-examples-weighted FedAvg mean of the clipped updates** (plus its rounding to
float32), whatever ``max_examples`` is, and every node adds it to its model in float32 (one
more float32 rounding). Bigger bounds cost bits instead: an upload carries
frac_bits + 5 + ceil(log2(max_parties x max_examples + 1)) + ceil(log2(max_parties)) bits
per value (32 at 3 parties, 100 examples and 2^-16: the size of the float32 update), and
bounds the GLWE noise budget cannot hold are refused with :class:`hefl.ConfigError`, which
names the largest ``frac_bits``, ``max_examples`` and ``max_parties`` that fit. The most
``max_examples`` that fit:

=============  ============  =========  =========
max_parties    2^-12         2^-16      2^-20
=============  ============  =========  =========
3              44,739,242    2,796,202  174,762
10             6,710,886     419,430    26,214
32             262,143       16,383     1,023
100            41,943        2,621      163
=============  ============  =========  =========

**Ciphertext on the wire**: every hefl array has ``stype`` :data:`hefl.STYPE`
(``"hefl.glwe.v2"``) under records named ``hefl.*``. No record named ``"arrays"`` travels
between server and nodes, so a ClientApp without :class:`HeflMod` fails on its first
``msg.content["arrays"]`` instead of training on ciphertext, and the strategy names
``HeflMod`` as the likely cause.

**Failures stop the run.** A round with fewer valid updates than ``min_results`` (default 1)
raises :class:`HeflRunError`, naming every node that failed and its error: the ServerApp
exits non-zero (Flower's ``flwr-serverapp`` exits 201; the simulation engine's process too)
and the run's status is ``finished:failed`` (``flwr ls``). ``flwr run --stream`` itself
only streams the log and exits 0 either way: check the status.

**The skip rule**: a node holding the key can send garbage under a well-formed header; the
server cannot tell. Every node then finds the round's sum impossible (no valid updates add up
to it), skips that round alike and reports it; the strategy logs it with the reason. Runs go
on; models stay identical.

**Metrics**: a node's training metrics could leak (a loss on local data), so
:class:`HeflMod` sends only the metrics you whitelist
(``HeflMod(train_metrics=["train-loss"], evaluate_metrics=["eval-acc"])``) and logs, once
per name, each one it drops. ``num-examples`` is never sent (the weight travels encrypted; a
whitelisted ``num-examples`` is dropped with a warning). The strategy therefore averages
whitelisted metrics **unweighted**, over the replies that carry them, and its summary log
says so; it adds ``hefl.clipped``, the round's total of clipped values.

**Catch-up and resync**: the strategy keeps the aggregates since its latest model snapshot
and sends each node, with its next message, the aggregates it lacks, each once (a node that
replies with an error is not re-sent the same aggregates; one that reports it is behind is
sent them again from where it is). Every ``snapshot_every`` rounds one up-to-date node is
asked to upload an encrypted snapshot of its model (:meth:`hefl.Party.snapshot`: the float32
bits as integers, so a resynced model is bit-identical); a node further behind than the kept
aggregates resyncs from it and applies the aggregates after it. A key holder could poison a
snapshot as it could an update (the resyncing node checks that it decrypts under its key to
this run's fingerprint and the announced round, with a model of the right shape). After the
last round :meth:`HeFedAvg.start` brings every connected node up to date.

**The model**: each node writes its model (``numpy.savez``, owner-only, atomically) whenever
it changes: to the node config path ``hefl-model-out``, else to
``<dir>/node-<node id>.npz`` for a directory given by run config ``hefl-model-dir`` or the
environment variable ``HEFL_MODEL_DIR`` (which the simulation engine's nodes can be given:
``flwr run . --run-config "hefl-model-dir='/tmp/models'"``). Read it back with
:func:`load_model` and evaluate it as you would any ``ArrayRecord``. Nodes brought up to date
only by the final synchronization never run your ``@app.evaluate`` on the final model: the
file is how to get it.

**Strict secure aggregation** (``HeFedAvg(..., secure_agg="strict", roster=...,
roster_fingerprint=...)``): every node also adds pairwise blinds inside its encrypted update,
keyed by X25519 with the other parties of a roster (``hefl identity``, ``hefl roster``), so
that one node's ciphertext decrypted with the shared key is noise unless one holds all its
partners' secrets; the blinds cancel in the sum of a round's whole party set. Each node takes
its identity file, the roster and the roster's fingerprint as compared out of band from node
config (``hefl-identity``, ``hefl-roster``, ``hefl-roster-fingerprint``) or the environment
(``HEFL_IDENTITY``, ``HEFL_ROSTER``, ``HEFL_ROSTER_FINGERPRINT``), never from
``run_config``; its party number is its identity's in the roster. It refuses another roster,
another party number, and a server whose settings weaken the roster's policy, naming what it
expected and what it found. Every connected node gets each round's instruction; a round is
published only when every member of its party set (round 1: the whole roster) sent a valid
update, and is **void** otherwise: nobody steps, its updates are dropped, and the next set
(announced with every outcome) holds the members that sent one. A node left out replies to
its next instruction without an update and is back in the set after it. A node seals each
round once (the sealed bytes live in ``Context.state`` until the round's outcome). The server
additionally sees each node's party number, the roster (public) and which rounds were void.

Limits: every array must be float32; ``num-examples`` must be an integer from 1 to
``max_examples``; at most ``max_parties`` nodes train per round (more sampled are trimmed,
with a warning); a server-side ``evaluate_fn`` is refused (the server has no model).

Example ServerApp and ClientApp::

    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from hefl.flower import HeflMod, HeFedAvg

    client = ClientApp(mods=[HeflMod(train_metrics=["train-loss"])])

    @client.train()
    def train(msg, context):  # msg.content["arrays"] is the plaintext global model
        ...
        return Message(RecordDict({"arrays": trained, "metrics": MetricRecord(
            {"num-examples": n, "train-loss": loss})}), reply_to=msg)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = HeFedAvg(key_id=context.run_config["hefl-key-id"], max_examples=6_000)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=10)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

import hefl

try:
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
        Error,
        Message,
        MessageType,
        MetricRecord,
        RecordDict,
    )
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg, Result
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "hefl.flower needs Flower: pip install 'hefl[flower]' (flwr>=1.41,<1.43)"
    ) from error

__all__ = [
    "HeflMod",
    "HeFedAvg",
    "HeflFlowerError",
    "HeflRunError",
    "SavedModel",
    "load_model",
    "KEY_NODE_CONFIG",
    "KEY_ENV",
    "MODEL_OUT_NODE_CONFIG",
    "MODEL_DIR_RUN_CONFIG",
    "MODEL_DIR_ENV",
    "IDENTITY_NODE_CONFIG",
    "IDENTITY_ENV",
    "ROSTER_NODE_CONFIG",
    "ROSTER_ENV",
    "ROSTER_FINGERPRINT_NODE_CONFIG",
    "ROSTER_FINGERPRINT_ENV",
    "DEFAULT_SNAPSHOT_EVERY",
]

# A child of Flower's logger: hefl's lines go where Flower's go (its console handler, and the
# log a run streams to `flwr run --stream` / `flwr log`).
log = logging.getLogger("flwr.hefl")

KEY_NODE_CONFIG = "hefl-key"
"""The node-config entry naming a node's key file."""

KEY_ENV = "HEFL_KEY"
"""The environment variable naming a node's key file (when the node config has none)."""

MODEL_OUT_NODE_CONFIG = "hefl-model-out"
"""Node-config entry: the ``.npz`` path where the node writes its model whenever it changes."""

MODEL_DIR_RUN_CONFIG = "hefl-model-dir"
"""Run-config entry: a directory where every node without ``hefl-model-out`` writes its
model as ``node-<node id>.npz`` (a public path, not a secret: the ServerApp sees it)."""

MODEL_DIR_ENV = "HEFL_MODEL_DIR"
"""The environment variable naming that directory when the run config has none."""

IDENTITY_NODE_CONFIG = "hefl-identity"
"""Secure aggregation: the node-config entry naming the node's identity file (mode 0600)."""

IDENTITY_ENV = "HEFL_IDENTITY"
"""The environment variable naming the identity file (when the node config has none)."""

ROSTER_NODE_CONFIG = "hefl-roster"
"""Secure aggregation: the node-config entry naming the roster file the coordinator sent."""

ROSTER_ENV = "HEFL_ROSTER"
"""The environment variable naming the roster file (when the node config has none)."""

ROSTER_FINGERPRINT_NODE_CONFIG = "hefl-roster-fingerprint"
"""Secure aggregation: the node-config entry holding the roster's fingerprint, as compared
out of band (64 hex digits, printed by ``hefl roster``)."""

ROSTER_FINGERPRINT_ENV = "HEFL_ROSTER_FINGERPRINT"
"""The environment variable holding the roster's fingerprint (when the node config has
none)."""

# What a node reads from its node config or its environment, never from run_config (which the
# ServerApp writes and sees): (node-config entry, environment variable, what it is). The key
# and the identity are secrets, refused in run_config; the roster and its fingerprint are
# public (a ServerApp may read them from there) but a node's own are its trust anchor.
_NODE_ONLY = (
    (KEY_NODE_CONFIG, KEY_ENV, "a key"),
    (IDENTITY_NODE_CONFIG, IDENTITY_ENV, "an identity"),
    (ROSTER_NODE_CONFIG, ROSTER_ENV, "the roster"),
    (ROSTER_FINGERPRINT_NODE_CONFIG, ROSTER_FINGERPRINT_ENV, "the roster fingerprint"),
)

DEFAULT_SNAPSHOT_EVERY = 16
"""Rounds between encrypted model snapshots unless :class:`HeFedAvg` is told otherwise."""

# Names in messages: everything hefl adds is under "hefl" and removed before user code runs.
_CONFIG = "config"
_ARRAYS = "arrays"
_METRICS = "metrics"
_HEFL = "hefl"  # ConfigRecord: the protocol's fields (server -> node) or status (node -> server)
_INITIAL = "hefl.initial"
_SNAPSHOT = "hefl.snapshot"
_AGGREGATES = "hefl.aggregates"
_UPDATE = "hefl.update"
_CLIPPED = "hefl.clipped"
_VOID = "hefl.void"
# Node-local state (Context.state).
_STATE = "hefl.party"
# Keys of a saved model file.
_SAVED_ROUND = "hefl.next-round"
_SAVED_SKIPPED = "hefl.skipped"
# Flower's error code of a ClientApp that raised (flwr.common.constant.ErrorCode).
_CLIENT_APP_RAISED_EXCEPTION = 2


class HeflFlowerError(hefl.HeflError):
    """A message that does not follow the HE FedAvg protocol (missing records, a model of
    another shape, a key from run_config, a reply without ``num-examples``)."""


class HeflRunError(HeflFlowerError, RuntimeError):
    """A round with fewer valid updates than ``min_results``: the run stops. The message
    names every node that failed and its error."""


# --- helpers shared by both sides -----------------------------------------------------------


def _ciphertext_array(data: bytes) -> Array:
    return Array(dtype="uint8", shape=(len(data),), stype=hefl.STYPE, data=data)


def _is_hefl(name: str) -> bool:
    return name == _HEFL or name.startswith(_HEFL + ".")


def _ciphertext(record: ArrayRecord, what: str) -> bytes:
    arrays = list(record.values())
    if len(arrays) != 1 or arrays[0].stype != hefl.STYPE:
        found = sorted({a.stype for a in arrays}) or ["nothing"]
        raise HeflFlowerError(
            f"{what}: expected one array of stype {hefl.STYPE!r}, got {len(arrays)} of {found}"
        )
    return bytes(arrays[0].data)


def _structure(arrays: ArrayRecord) -> list[tuple[str, tuple[int, ...]]]:
    """The names and shapes of a float32 model, refusing anything else."""
    structure = []
    for name, array in arrays.items():
        if array.stype != "numpy.ndarray" or array.dtype != "float32":
            raise TypeError(
                f"HE FedAvg needs float32 numpy arrays; {name!r} is {array.dtype} "
                f"({array.stype}): convert the model with .astype(numpy.float32)"
            )
        structure.append((name, tuple(int(d) for d in array.shape)))
    if sum(int(np.prod(shape, dtype=np.int64)) for _, shape in structure) == 0:
        raise ValueError("the model has no values")
    return structure


def _flat(arrays: ArrayRecord) -> np.ndarray:
    parts = [array.numpy().ravel() for array in arrays.values()]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _unflat(flat: np.ndarray, structure: list[tuple[str, tuple[int, ...]]]) -> ArrayRecord:
    out = ArrayRecord()
    offset = 0
    for name, shape in structure:
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = Array(flat[offset : offset + size].reshape(shape).astype(np.float32))
        offset += size
    return out


def _metric_names(records: Iterable[MetricRecord]) -> set[str]:
    return {name for record in records for name in record}


def _kept_metrics(records: Iterable[MetricRecord], allowed: Collection[str]) -> MetricRecord:
    kept = MetricRecord()
    for record in records:
        for name, value in record.items():
            if name in allowed:
                kept[name] = value
    return kept


class SavedModel(NamedTuple):
    """A node's model as :class:`HeflMod` writes it: the arrays, the number of rounds it
    has applied (its next round) and the rounds it skipped."""

    arrays: ArrayRecord
    rounds: int
    skipped: list[int]


def load_model(path: str | os.PathLike[str]) -> SavedModel:
    """Read a model file a node wrote (node config ``hefl-model-out``, or
    ``node-<node id>.npz`` in the ``hefl-model-dir`` directory).

    Every node of a run ends with the same model, so any node's file is the run's model:

    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "node-1.npz")
    >>> np.savez(path, w=np.ones(2, np.float32), **{"hefl.next-round": 3, "hefl.skipped": []})
    >>> model = load_model(path)
    >>> model.rounds, model.arrays["w"].numpy()
    (3, array([1., 1.], dtype=float32))
    """
    with np.load(path) as saved:
        arrays = ArrayRecord(
            {
                name: Array(np.ascontiguousarray(saved[name]))
                for name in saved.files
                if name not in (_SAVED_ROUND, _SAVED_SKIPPED)
            }
        )
        rounds = int(saved[_SAVED_ROUND])
        skipped = [int(r) for r in saved[_SAVED_SKIPPED]]
    return SavedModel(arrays, rounds, skipped)


def _write_model(path: Path, model: ArrayRecord, party: hefl.Party) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: array.numpy() for name, array in model.items()}
    arrays[_SAVED_ROUND] = np.array(party.next_round)
    arrays[_SAVED_SKIPPED] = np.array(party.skipped, dtype=np.int64)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp: mode 0600
            np.savez(file, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the node: HeflMod ----------------------------------------------------------------------


_loaded: dict[tuple[str, str, int, int], object] = {}


def _load_cached(load: Callable[[str], object], path: str) -> object:
    """``load(path)``, once per file version (its path, inode and modification time): a node
    rebuilds its party for every message, without reading and checking its files again."""
    stat = os.stat(path)
    cache_key = (load.__qualname__, os.path.realpath(path), stat.st_mtime_ns, stat.st_ino)
    if cache_key not in _loaded:
        _loaded[cache_key] = load(path)
    return _loaded[cache_key]


def _load_key(path: str) -> hefl.SecretKey:
    return _load_cached(hefl.SecretKey.load, path)  # type: ignore[return-value]


@dataclass(frozen=True)
class _Credentials:
    """A node's secure-aggregation credentials: its identity, its roster, the fingerprint it
    compared out of band, and its party number (the roster's)."""

    identity: hefl.Identity
    roster: hefl.Roster
    fingerprint: str
    party: int


@dataclass
class _Node:
    """One node's party machine and model structure, for the span of one message."""

    party: hefl.Party
    structure: list[tuple[str, tuple[int, ...]]]
    before: int  # the round the party was on when the message came

    def model(self) -> ArrayRecord:
        return _unflat(self.party.model, self.structure)


@dataclass
class HeflMod:
    """A ClientApp mod that runs this node's :class:`hefl.Party`: applies the encrypted
    aggregates, hands your functions the plaintext model, and encrypts train replies.

    Use it as ``ClientApp(mods=[HeflMod()])`` with a ServerApp running :class:`HeFedAvg`.
    Your train function receives the plaintext global model under ``"arrays"`` and the
    server's config under ``"config"``; it returns its trained model (an ``ArrayRecord`` of
    the same float32 arrays) and a ``MetricRecord`` with ``num-examples`` (an integer, the
    FedAvg weight). The mod replaces that reply with one ciphertext of the update (trained
    minus global model, clipped to [-8, 8]: the count of clipped values is logged and sent as
    ``hefl.clipped``).

    Args:
        train_metrics: metric names a train reply may pass to the server in plaintext;
            every other is dropped, and each dropped name logged once (default: none).
        evaluate_metrics: the same for evaluate replies (default: none).
        examples_key: the metric holding the number of training examples, the FedAvg
            weight; it is never sent in plaintext (whitelisting it is warned about).
        seed: seeds this node's unbiased rounding with ``seed`` plus its party number, for
            reproducible runs (the rounding protects nothing: values are encrypted
            afterwards); default: from the OS.

    Evaluate messages also carry catch-up aggregates: register an ``@app.evaluate()``
    function, or run the strategy with ``fraction_evaluate=0.0`` (Flower refuses a message
    type the ClientApp has no function for, before any mod runs).

    The key file comes from node config ``hefl-key`` or else environment ``HEFL_KEY``, never
    from ``run_config``. With ``strict`` secure aggregation (see the module docs) so do the
    identity file (``hefl-identity`` / ``HEFL_IDENTITY``), the roster (``hefl-roster`` /
    ``HEFL_ROSTER``) and its fingerprint as compared out of band
    (``hefl-roster-fingerprint`` / ``HEFL_ROSTER_FINGERPRINT``). The node writes its model whenever it changes to node config
    ``hefl-model-out``, else to ``node-<node id>.npz`` in run config ``hefl-model-dir`` or
    environment ``HEFL_MODEL_DIR`` (see :func:`load_model`). A failure after the node has
    caught up (your function raised, ``num-examples`` out of range) becomes an error reply
    that keeps what the node applied.

    >>> from flwr.clientapp import ClientApp
    >>> app = ClientApp(mods=[HeflMod(train_metrics=["train-loss"])])
    """

    train_metrics: Collection[str] = ()
    evaluate_metrics: Collection[str] = ()
    examples_key: str = "num-examples"
    seed: int | None = None
    _key_env: str = field(default=KEY_ENV, repr=False)
    _dropped: set[tuple[str, str]] = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        for kind, names in (
            ("train_metrics", self.train_metrics),
            ("evaluate_metrics", self.evaluate_metrics),
        ):
            if self.examples_key in names:
                log.warning(
                    "HeflMod: %r in %s is never sent: it is the FedAvg weight, which travels "
                    "encrypted inside the update (the server never sees it)",
                    self.examples_key,
                    kind,
                )
        self.train_metrics = frozenset(self.train_metrics) - {self.examples_key}
        self.evaluate_metrics = frozenset(self.evaluate_metrics) - {self.examples_key}

    def __call__(
        self, msg: Message, ctx: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        kind = msg.metadata.message_type.split(".")[0]
        if kind not in (MessageType.TRAIN, MessageType.EVALUATE) or msg.has_error():
            return call_next(msg, ctx)
        if _HEFL not in msg.content.config_records:
            raise HeflFlowerError(
                "HeflMod received a message without hefl's fields: run the ServerApp with "
                "hefl.flower.HeFedAvg"
            )
        fields = msg.content.config_records[_HEFL]
        self._refuse_run_config(ctx)
        key = self._key(ctx, str(fields["key-id"]))
        secure = self._credentials(ctx, fields)
        node = self._node(msg.content, fields, ctx, key, secure)
        # With secure aggregation every reply says which party this node is: the roster's
        # numbering, which the server learns from the nodes.
        known = {} if secure is None else {"party": secure.party}
        if node is None:  # no model yet and no initial arrays: ask for them
            return self._status_reply(msg, None, {"behind": "this node has no model", **known})
        try:
            return self._run(msg, ctx, call_next, kind, fields, node, known)
        except Exception as error:  # noqa: BLE001 - reported to the server, state kept
            log.error("HeflMod: %s", error, exc_info=error)
            reason = f"{type(error)}:<'{error}'>"
            return Message(Error(code=_CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
        finally:
            self._keep(ctx, node)

    # -- the steps ---------------------------------------------------------------------------

    def _run(
        self,
        msg: Message,
        ctx: Context,
        call_next: Callable[[Message, Context], Message],
        kind: str,
        fields: ConfigRecord,
        node: _Node,
        known: dict,
    ) -> Message:
        status = {**known, **self._catch_up(msg.content, fields, node)}
        self._export(ctx, node)
        party = node.party
        current = int(fields["round"])  # type: ignore[arg-type]
        if party.next_round != current:
            status["behind"] = (
                f"this node is on round {party.next_round}, the server on {current}: it lacks "
                "aggregates it was sent before"
            )
            log.warning("HeflMod: %s; asking for them", status["behind"])
            return self._status_reply(msg, party, status)
        if kind == MessageType.TRAIN and bool(fields.get("sync-only", False)):
            return self._status_reply(msg, party, status)
        if kind == MessageType.TRAIN and not party.is_member:
            # Strict secure aggregation: left out of this round's set (it missed a round, or
            # resynced). It must not seal; its reply puts it back in the next round's set.
            status["rejoin"] = True
            log.info(
                "HeflMod: not in the party set of round %d (it missed a round, or resynced): "
                "no update this round; asking to be in the next round's set",
                current,
            )
            return self._status_reply(msg, party, status)

        msg.content = self._user_content(msg.content, node.model())
        reply = call_next(msg, ctx)
        if reply.has_error():
            return reply
        if kind == MessageType.TRAIN:
            return self._sealed_reply(reply, node, fields, status)
        metrics = self._whitelisted(reply.content, self.evaluate_metrics, "evaluate")
        return self._reply(reply, party, status, RecordDict({_METRICS: metrics}))

    def _node_setting(self, ctx: Context, entry: str, env: str) -> str | None:
        """A setting of this node: its node config's ``entry``, else environment ``env``."""
        if entry == KEY_NODE_CONFIG:
            env = self._key_env
        value = ctx.node_config.get(entry) or os.environ.get(env)
        return str(value) if value else None

    def _refuse_run_config(self, ctx: Context) -> None:
        """Refuses a run_config that carries a secret only a node's own configuration may:
        the ServerApp writes and sees run_config, so a key or identity path there leaks it."""
        values = set(map(str, ctx.run_config.values()))
        for entry, env, what in _NODE_ONLY[:2]:
            mine = self._node_setting(ctx, entry, env)
            if entry in ctx.run_config or (mine is not None and mine in values):
                raise HeflFlowerError(
                    f"run_config has a {entry!r} entry: the ServerApp sees run_config, so "
                    f"{what} must never travel there; give each SuperNode "
                    f"--node-config \"{entry}='...'\" or set {env}"
                )

    def _key(self, ctx: Context, expected_id: str) -> hefl.SecretKey:
        path = self._node_setting(ctx, KEY_NODE_CONFIG, KEY_ENV)
        if not path:
            raise HeflFlowerError(
                f"no hefl key on this node: start the SuperNode with --node-config "
                f"\"{KEY_NODE_CONFIG}='/path/to/hefl.key'\" or set {KEY_ENV}"
            )
        key = _load_key(path)
        if key.key_id != expected_id:
            raise hefl.KeyMismatchError(
                f"this node's key {path} has key id {key.key_id}, the server expects {expected_id}"
            )
        return key

    def _credentials(self, ctx: Context, fields: ConfigRecord) -> _Credentials | None:
        """This node's secure-aggregation credentials (``None`` without any), checked
        against the fingerprint compared out of band and against what the server says: its
        roster's fingerprint and the node's party number."""
        settings = {e: self._node_setting(ctx, e, env) for e, env, _ in _NODE_ONLY[1:]}
        given = [entry for entry, value in settings.items() if value]
        server = fields.get("secure-agg")
        if not given:
            if server is not None:
                raise HeflFlowerError(
                    f"the server runs {server} secure aggregation and this node has no "
                    f"identity or roster: start the SuperNode with --node-config "
                    f"\"{IDENTITY_NODE_CONFIG}='/path/to/party.id' "
                    f"{ROSTER_NODE_CONFIG}='/path/to/roster.json' "
                    f"{ROSTER_FINGERPRINT_NODE_CONFIG}='<64 hex>'\" (or set {IDENTITY_ENV}, "
                    f"{ROSTER_ENV} and {ROSTER_FINGERPRINT_ENV}); a roster named in run_config "
                    "is the server's choice, never a node's trust anchor"
                )
            return None
        if len(given) < len(settings):
            missing = sorted(set(settings) - set(given))
            raise HeflFlowerError(
                f"secure aggregation needs {', '.join(settings)} together (node config or "
                f"environment); this node has {', '.join(given)} but not {', '.join(missing)}"
            )
        identity: hefl.Identity = _load_cached(
            hefl.Identity.load, str(settings[IDENTITY_NODE_CONFIG])
        )  # type: ignore[assignment]
        roster: hefl.Roster = _load_cached(
            hefl.Roster.load, str(settings[ROSTER_NODE_CONFIG])
        )  # type: ignore[assignment]
        mine = str(settings[ROSTER_FINGERPRINT_NODE_CONFIG]).strip().lower()
        roster.check_fingerprint(mine)
        party = roster.party_of(identity)
        if server is not None:
            theirs = str(fields.get("roster-fingerprint", ""))
            if theirs != mine:
                raise hefl.RosterError(
                    f"the server's roster has fingerprint {theirs or 'none'}, this node's "
                    f"roster (compared out of band) is {mine}: another federation's server, "
                    "or a substituted roster"
                )
            if "party" in fields and int(fields["party"]) != party:  # type: ignore[arg-type]
                raise hefl.RosterError(
                    f"the server numbers this node party {fields['party']}, its roster gives "
                    f"its identity party {party}: the party numbering is the roster's"
                )
        return _Credentials(identity, roster, mine, party)

    def _node(
        self,
        content: RecordDict,
        fields: ConfigRecord,
        ctx: Context,
        key: hefl.SecretKey,
        secure: _Credentials | None,
    ) -> _Node | None:
        """This node's party: restored from ``Context.state``, or made from the initial
        arrays the server sends a node it has not heard from; ``None`` without either."""
        every = int(fields.get("snapshot-every", 0))  # type: ignore[arg-type]
        party = int(fields["party"]) if secure is None else secure.party  # type: ignore[arg-type]
        settings: dict = dict(
            max_parties=int(fields["max-parties"]),  # type: ignore[arg-type]
            max_examples=int(fields["max-examples"]),  # type: ignore[arg-type]
            frac_bits=int(fields["frac-bits"]),  # type: ignore[arg-type]
            min_parties=int(fields["min-parties"]),  # type: ignore[arg-type]
            snapshot_every=every or None,
            party=party,
            run=str(ctx.run_id),
            seed=None if self.seed is None else self.seed + party,
        )
        if secure is not None:
            # The server's mode: the party refuses one weaker than its roster's policy.
            mode = fields.get("secure-agg")
            settings.update(
                secure_agg=None if mode is None else str(mode),
                identity=secure.identity,
                roster=secure.roster,
                roster_fingerprint=secure.fingerprint,
            )
        length = int(fields["length"])  # type: ignore[arg-type]
        saved = ctx.state.config_records.get(_STATE)
        if saved is not None:
            structure = [(n, tuple(s)) for n, s in json.loads(str(saved["structure"]))]
            party = hefl.Party(key, np.zeros(length, np.float32), **settings)  # type: ignore[arg-type]
            party.restore(bytes(saved["state"]))  # type: ignore[arg-type]
            return _Node(party, structure, party.next_round)
        if _INITIAL not in content.array_records:
            return None
        initial = content.array_records[_INITIAL]
        structure = _structure(initial)
        flat = _flat(initial)
        if len(flat) != length:
            raise HeflFlowerError(f"initial arrays hold {len(flat)} values, expected {length}")
        party = hefl.Party(key, flat, **settings)  # type: ignore[arg-type]
        return _Node(party, structure, -1)

    @staticmethod
    def _keep(ctx: Context, node: _Node | None) -> None:
        if node is not None:
            ctx.state.config_records[_STATE] = ConfigRecord(
                {"state": node.party.state(), "structure": json.dumps(node.structure)}
            )

    @staticmethod
    def _catch_up(content: RecordDict, fields: ConfigRecord, node: _Node) -> dict:
        """Hands the machine the snapshot and aggregates the server sent, in order; stops at
        a gap (the server re-sends from where the node is, once it says so)."""
        party = node.party
        status: dict = {}
        if _SNAPSHOT in content.array_records:
            round_ = int(fields["snapshot-round"])  # type: ignore[arg-type]
            if party.next_round < round_:
                party.resync(round_, _ciphertext(content.array_records[_SNAPSHOT], "snapshot"))
                log.info("HeflMod: resynced from the model snapshot of round %d", round_)
        rounds = [int(r) for r in fields.get("rounds", [])]  # type: ignore[union-attr]
        counts = [int(c) for c in fields.get("counts", [])]  # type: ignore[union-attr]
        flat_parties = [int(p) for p in fields.get("parties", [])]  # type: ignore[union-attr]
        aggregates = content.array_records.get(_AGGREGATES, ArrayRecord())
        if len(rounds) != len(counts) or sum(counts) != len(flat_parties):
            raise HeflFlowerError(
                f"{len(rounds)} rounds, {len(counts)} party counts and {len(flat_parties)} "
                "party ids do not describe the same aggregates"
            )
        # Strict secure aggregation: each round may be void, and announces the next set.
        voids = [bool(v) for v in fields.get("voids", [])]  # type: ignore[union-attr]
        next_counts = [int(c) for c in fields.get("next-counts", [])]  # type: ignore[union-attr]
        next_flat = [int(p) for p in fields.get("next-parties", [])]  # type: ignore[union-attr]
        if (voids or next_counts) and (
            len(voids) != len(rounds)
            or len(next_counts) != len(rounds)
            or sum(next_counts) != len(next_flat)
        ):
            raise HeflFlowerError(
                f"{len(rounds)} rounds, {len(voids)} void flags, {len(next_counts)} set sizes "
                f"and {len(next_flat)} party ids do not describe the same outcomes"
            )
        skipped, reasons = [], []
        offset = next_offset = 0
        for i, (round_, count) in enumerate(zip(rounds, counts, strict=True)):
            parties = flat_parties[offset : offset + count]
            offset += count
            void = voids[i] if voids else False
            next_set = None
            if next_counts:
                next_set = next_flat[next_offset : next_offset + next_counts[i]]
                next_offset += next_counts[i]
            name = f"round-{round_}"
            if void:
                aggregate = b""
            elif name not in aggregates:
                raise HeflFlowerError(f"the aggregate of round {round_} is missing")
            else:
                aggregate = _ciphertext(
                    ArrayRecord({name: aggregates[name]}), f"the aggregate of round {round_}"
                )
            try:
                outcome, reason = party.receive(
                    round_, parties, aggregate, void=void, next_set=next_set
                )
            except hefl.OutOfOrderError:
                break  # a gap: reported by the round check
            if outcome == "void":
                log.info(
                    "HeflMod: round %d is void (a member of its party set sent no valid "
                    "update): no step; the next round's set is %s",
                    round_,
                    next_set,
                )
            if outcome == "skipped":
                log.warning(
                    "HeflMod: skipped round %d (parties %s): its sum is not a sum of valid "
                    "updates: %s",
                    round_,
                    parties,
                    reason,
                )
                skipped.append(round_)
                reasons.append(str(reason))
        if skipped:
            status["skipped"] = skipped
            status["reasons"] = reasons
        return status

    def _export(self, ctx: Context, node: _Node) -> None:
        out = ctx.node_config.get(MODEL_OUT_NODE_CONFIG)
        if out:
            path = Path(str(out))
        else:
            directory = ctx.run_config.get(MODEL_DIR_RUN_CONFIG) or os.environ.get(MODEL_DIR_ENV)
            if not directory:
                return
            path = Path(str(directory)) / f"node-{ctx.node_id}.npz"
        if node.party.next_round != node.before or not path.exists():
            _write_model(path, node.model(), node.party)

    @staticmethod
    def _user_content(content: RecordDict, model: ArrayRecord) -> RecordDict:
        """The message the user's function sees: the model, the server's config and any
        other record the server sent, without hefl's."""
        user = RecordDict()
        for name, record in content.items():
            if not _is_hefl(name):
                user[name] = record
        user[_ARRAYS] = model
        if _CONFIG not in user:
            user[_CONFIG] = ConfigRecord()
        return user

    def _whitelisted(
        self, content: RecordDict, allowed: Collection[str], kind: str
    ) -> MetricRecord:
        records = list(content.metric_records.values())
        for name in sorted(_metric_names(records) - set(allowed) - {self.examples_key}):
            if (kind, name) not in self._dropped:
                self._dropped.add((kind, name))
                log.warning(
                    "HeflMod: not sending %s metric %r to the server (not whitelisted: "
                    "HeflMod(%s_metrics=[...]) sends a metric in the clear)",
                    kind,
                    name,
                    kind,
                )
        return _kept_metrics(records, allowed)

    def _sealed_reply(
        self, reply: Message, node: _Node, fields: ConfigRecord, status: dict
    ) -> Message:
        content = reply.content
        arrays = list(content.array_records.values())
        if len(arrays) != 1:
            raise HeflFlowerError(
                f"the train function must reply with one ArrayRecord (the trained model), "
                f"got {len(arrays)}"
            )
        trained = arrays[0]
        if _structure(trained) != node.structure:
            raise HeflFlowerError(
                "the trained model's arrays (names and shapes) differ from the global model's"
            )
        examples = None
        for record in content.metric_records.values():
            if self.examples_key in record:
                examples = record[self.examples_key]
        if isinstance(examples, float) and examples.is_integer():
            examples = int(examples)
        if not isinstance(examples, int) or examples <= 0:
            raise HeflFlowerError(
                f"the train reply needs {self.examples_key!r}, a positive integer (the FedAvg "
                f"weight), got {examples!r}"
            )
        max_examples = int(fields["max-examples"])  # type: ignore[arg-type]
        if examples > max_examples:
            raise HeflFlowerError(
                f"{self.examples_key} is {examples}, more than max_examples={max_examples} "
                "of the server's HeFedAvg: raise max_examples there"
            )
        party = node.party
        round_ = party.next_round
        sealed, clipped = party.seal_model(_flat(trained), examples)
        if clipped:
            log.warning(
                "HeflMod: round %d: %d of %d update values were beyond [-%g, %g] and clipped",
                round_,
                clipped,
                party.length,
                hefl.CLIP,
                hefl.CLIP,
            )
        metrics = self._whitelisted(content, self.train_metrics, "train")
        metrics[_CLIPPED] = clipped
        out = RecordDict(
            {_UPDATE: ArrayRecord({"update": _ciphertext_array(sealed)}), _METRICS: metrics}
        )
        if bool(fields.get("take-snapshot", False)):
            snapshot_round, snapshot = party.snapshot()
            out[_SNAPSHOT] = ArrayRecord({"snapshot": _ciphertext_array(snapshot)})
            status["snapshot-round"] = snapshot_round
        return self._reply(reply, party, status, out)

    @staticmethod
    def _reply(reply: Message, party: hefl.Party, status: dict, content: RecordDict) -> Message:
        content[_HEFL] = ConfigRecord({"next-round": party.next_round, **status})
        reply.content = content
        return reply

    @staticmethod
    def _status_reply(msg: Message, party: hefl.Party | None, status: dict) -> Message:
        next_round = -1 if party is None else party.next_round
        content = RecordDict({_HEFL: ConfigRecord({"next-round": next_round, **status})})
        return Message(content, reply_to=msg)


# --- the server: HeFedAvg -------------------------------------------------------------------


@dataclass
class _NodeView:
    """What the server knows of a node."""

    party: int | None  # None: not known yet (secure aggregation: the node says, by its roster)
    sent_to: int | None = None  # the round it is on if it applied all it was sent (None: fresh)
    confirmed: int | None = None  # the round it last said it is on
    error: str | None = None  # its last error


class _Kept(NamedTuple):
    """A round's published outcome, kept for the nodes that lack it."""

    parties: list[int]  # in the sum (a void round: the members that sent a valid update)
    aggregate: bytes  # empty when void
    void: bool = False  # secure aggregation: no sum (a member of the set failed)
    next_set: list[int] | None = None  # secure aggregation: the next round's party set


def _load_roster(roster: str | os.PathLike[str] | bytes | hefl.Roster) -> hefl.Roster:
    if isinstance(roster, hefl.Roster):
        return roster
    if isinstance(roster, bytes):
        return hefl.Roster.from_bytes(roster)
    return hefl.Roster.load(roster)


def _most_parties(key_id: str, max_examples: int, frac_bits: int, up_to: int) -> int:
    """The largest max_parties up to ``up_to`` whose sums fit these bounds."""

    def fits(parties: int) -> bool:
        try:
            hefl.KeylessSum(
                key_id, 1, max_parties=parties, max_examples=max_examples, frac_bits=frac_bits
            )
            return True
        except hefl.ConfigError:
            return False

    if not fits(1):  # raises with the numbers and what fits
        hefl.KeylessSum(key_id, 1, max_parties=1, max_examples=max_examples, frac_bits=frac_bits)
    lo, hi = 1, up_to + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


class HeFedAvg(FedAvg):
    """FedAvg whose server adds encrypted updates without a key and holds no model.

    Args:
        key_id: the public key id of the nodes' shared key (``hefl.key_id(path)`` or the
            first word ``hefl keygen`` prints). The server needs nothing else of the key.
        max_examples: an upper bound on any node's ``num-examples`` (an integer). The
            resolution does not depend on it; the bits per value do (see the module docs).
        max_parties: the most updates one aggregate may sum; default: the largest up to 100
            that fits ``max_examples`` and ``frac_bits`` (logged by :meth:`summary`).
            Sampled nodes beyond it do not train that round.
        frac_bits: fractional bits of the fixed point (default 16): each value of a round's
            mean update is within 2^-frac_bits of the exact num-examples-weighted mean of
            the clipped updates (plus float32 rounding).
        min_results: the fewest valid updates a round needs; a round with fewer raises
            :class:`HeflRunError` and the run stops (default 1). Nodes refuse an aggregate of
            fewer.
        snapshot_every: rounds between encrypted model snapshots, from which a node further
            behind than the kept aggregates resyncs (default 16; ``None``: none, and every
            aggregate is kept).
        secure_agg: ``"strict"``: pairwise blinds inside the encrypted updates (see the module
            docs), over the parties of ``roster``; ``None`` (default): none.
        roster: with ``secure_agg``, the roster (a path to ``roster.json``, its bytes, or a
            :class:`hefl.Roster`): its party count is ``max_parties`` and its minimum the
            default ``min_results``.
        roster_fingerprint: the roster's fingerprint as compared out of band; another is
            refused. Nodes compare their own, and refuse a server whose roster differs.
        **kwargs: passed to ``FedAvg`` (``fraction_train``, ``min_train_nodes``, ...).

    ``start`` refuses a server-side ``evaluate_fn``. Its result's ``arrays`` is empty: the
    trained model lives on the nodes (:func:`load_model`).

    >>> strategy = HeFedAvg(key_id="ab" * 32, max_examples=6_000)
    >>> strategy.max_parties  # the most that fit 6,000 examples at 2^-16
    85
    >>> strategy.start(grid=None, initial_arrays=ArrayRecord(), evaluate_fn=lambda r, a: None)
    Traceback (most recent call last):
    ...
    ValueError: HeFedAvg holds no model (the server cannot decrypt, by design): evaluate on the nodes instead of passing evaluate_fn
    """

    def __init__(
        self,
        *,
        key_id: str,
        max_examples: int,
        max_parties: int | None = None,
        frac_bits: int = hefl.DEFAULT_FRAC_BITS,
        min_results: int | None = None,
        snapshot_every: int | None = DEFAULT_SNAPSHOT_EVERY,
        secure_agg: str | None = None,
        roster: str | os.PathLike[str] | bytes | hefl.Roster | None = None,
        roster_fingerprint: str | None = None,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("train_metrics_aggr_fn", mean_metrics)
        kwargs.setdefault("evaluate_metrics_aggr_fn", mean_metrics)
        self.roster = self._secure_agg(secure_agg, roster, roster_fingerprint, key_id)
        self.secure_agg = secure_agg
        if self.roster is not None:
            if max_parties is None:
                max_parties = self.roster.parties
            if min_results is None:
                min_results = self.roster.min_parties
            self._check_strict(max_parties, min_results, kwargs)
            # Wait for the nodes a sum needs before the first round.
            for name in ("min_available_nodes", "min_train_nodes"):
                kwargs.setdefault(name, self.roster.min_parties)
        if min_results is None:
            min_results = 1
        super().__init__(**kwargs)  # type: ignore[arg-type]
        for name, value in (("max_examples", max_examples), ("min_results", min_results)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if snapshot_every is not None and (
            not isinstance(snapshot_every, int) or snapshot_every <= 0
        ):
            raise ValueError(
                f"snapshot_every must be a positive int or None, got {snapshot_every!r}"
            )
        if max_parties is None:
            max_parties = _most_parties(key_id, max_examples, frac_bits, hefl.DEFAULT_MAX_PARTIES)
        # Validates the key id and the bounds (a ConfigError names what fits).
        hefl.KeylessSum(
            key_id, 1, max_parties=max_parties, max_examples=max_examples, frac_bits=frac_bits
        )
        if min_results > max_parties:
            raise hefl.ConfigError(
                f"min_results={min_results} is more than max_parties={max_parties}: no round "
                "could reach it"
            )
        self.key_id = key_id
        self.max_examples = max_examples
        self.max_parties = max_parties
        self.frac_bits = frac_bits
        self.min_results = min_results
        self.snapshot_every = snapshot_every
        self._reset(ArrayRecord())

    @staticmethod
    def _secure_agg(
        mode: str | None,
        roster: str | os.PathLike[str] | bytes | hefl.Roster | None,
        fingerprint: str | None,
        key_id: str,
    ) -> hefl.Roster | None:
        """The roster of ``strict`` secure aggregation, checked against the fingerprint
        compared out of band and the key id; ``None`` without secure aggregation."""
        if mode is None:
            if roster is not None or fingerprint is not None:
                raise ValueError(
                    "a roster without secure_agg: pass secure_agg='strict' to use it"
                )
            return None
        if mode != "strict":
            raise ValueError(f"secure_agg must be 'strict' or None, got {mode!r}")
        if roster is None or fingerprint is None:
            raise ValueError(
                "secure_agg='strict' needs the roster and the roster_fingerprint compared "
                "out of band (hefl roster prints it)"
            )
        loaded = _load_roster(roster)
        loaded.check_fingerprint(fingerprint)
        if loaded.key_id != key_id:
            raise hefl.RosterError(
                f"the roster is for key {loaded.key_id}, this strategy's key_id is {key_id}"
            )
        return loaded

    def _check_strict(self, max_parties: int, min_results: int, kwargs: dict) -> None:
        """Refuses settings the nodes would refuse (weaker than the roster's policy) or that
        cannot run strict rounds (which train every member of a round's set)."""
        assert self.roster is not None
        if max_parties != self.roster.parties:
            raise hefl.RosterError(
                f"the plan weakens the roster's policy: parties: the roster says "
                f"{self.roster.parties}, the plan {max_parties} (max_parties)"
            )
        if min_results < self.roster.min_parties:
            raise hefl.RosterError(
                f"the plan weakens the roster's policy: min_parties: the roster says "
                f"{self.roster.min_parties}, the plan {min_results} (min_results)"
            )
        if kwargs.get("fraction_train", 1.0) != 1.0:
            raise ValueError(
                "secure_agg='strict' trains every member of a round's party set: "
                f"fraction_train must be 1.0, got {kwargs['fraction_train']}"
            )

    def _reset(self, initial: ArrayRecord) -> None:
        self._initial = initial
        self._length = 0
        self._run: str | None = None  # the run's fingerprint (set by start)
        self._round = 0  # the next round to publish
        self._kept: dict[int, _Kept] = {}  # round -> its outcome
        self._snapshot: tuple[int, bytes] | None = None
        self._snapshot_asked: int | None = None  # the node asked for one this round
        self._nodes: dict[int, _NodeView] = {}
        self._sampled: list[int] = []
        self._trimmed_warned = False
        # Strict secure aggregation: the open round's party set (round 0: the whole roster),
        # the parties asking to be in the next one, and the nodes connected this round.
        self._set: list[int] = [] if self.roster is None else list(range(self.roster.parties))
        self._rejoining: set[int] = set()
        self._connected: set[int] = set()

    # -- run ---------------------------------------------------------------------------------

    def start(  # type: ignore[override]
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Runs ``num_rounds`` of HE FedAvg from the public ``initial_arrays``, then brings
        every connected node up to the last aggregate (:meth:`synchronize`). Raises
        :class:`HeflRunError` when a round has fewer than ``min_results`` valid updates."""
        if evaluate_fn is not None:
            raise ValueError(
                "HeFedAvg holds no model (the server cannot decrypt, by design): evaluate "
                "on the nodes instead of passing evaluate_fn"
            )
        structure = _structure(initial_arrays)
        self._reset(initial_arrays)
        self._length = sum(int(np.prod(s, dtype=np.int64)) for _, s in structure)
        # What every node's uploads name in their headers: the nodes hash the same public
        # settings with their Context's run id (see HeflMod).
        self._run = hefl.run_fingerprint(
            self.key_id,
            self._length,
            max_parties=self.max_parties,
            max_examples=self.max_examples,
            frac_bits=self.frac_bits,
            min_parties=self.min_results,
            snapshot_every=self.snapshot_every,
            run=str(grid.run.run_id),
            roster_fingerprint=None if self.roster is None else self.roster.fingerprint,
        )
        result = super().start(
            grid,
            initial_arrays,
            num_rounds=num_rounds,
            timeout=timeout,
            train_config=train_config,
            evaluate_config=evaluate_config,
        )
        self.synchronize(grid, timeout=timeout)
        return result

    def synchronize(self, grid: Grid, timeout: float = 600) -> list[int]:
        """Sends every connected node that is not on the last round what it lacks (without
        training; a node that says it is still behind is sent it again, once); returns the
        nodes still behind afterwards, logged with their last errors."""
        behind = [n for n in grid.get_node_ids() if self._view(n).confirmed != self._round]
        for _ in range(2):  # the second pass: nodes that said they are still behind
            if not behind:
                break
            messages = [
                self._message(node, ConfigRecord(), MessageType.TRAIN, sync_only=True)
                for node in behind
            ]
            replied = [
                reply.metadata.src_node_id
                for reply in grid.send_and_receive(messages, timeout=timeout)
                if self._note(reply) is not None
            ]
            behind = [n for n in replied if self._view(n).confirmed != self._round]
        still = [n for n in grid.get_node_ids() if self._view(n).confirmed != self._round]
        for node in still:
            view = self._view(node)
            log.warning(
                "node %d did not reach the final model (round %d; it says it is on %s): %s",
                node,
                self._round,
                view.confirmed,
                view.error or "no reply",
            )
        return still

    def summary(self) -> None:
        """Logs the configuration (what FedAvg logs, but how metrics are averaged here)."""
        log.info(
            "\t├──> Sampling: fraction train %.2f | evaluate %.2f; minimum nodes: train %d | "
            "evaluate %d | available %d",
            self.fraction_train,
            self.fraction_evaluate,
            self.min_train_nodes,
            self.min_evaluate_nodes,
            self.min_available_nodes,
        )
        log.info(
            "\t├──> HE FedAvg: key id %s, max_parties %d, max_examples %d, resolution 2^-%d, "
            "min_results %d, snapshots every %s rounds",
            self.key_id,
            self.max_parties,
            self.max_examples,
            self.frac_bits,
            self.min_results,
            self.snapshot_every,
        )
        if self.roster is not None:
            log.info(
                "\t├──> Secure aggregation %s: roster %s, %d parties, at least %d in a sum; a "
                "round with a member of its set missing is void",
                self.secure_agg,
                self.roster.fingerprint,
                self.roster.parties,
                self.roster.min_parties,
            )
        log.info(
            "\t└──> Models weighted by num-examples, which travels encrypted; metrics: "
            "unweighted mean of the whitelisted ones over the replies that carry them, plus "
            "hefl.clipped (values clipped, summed)"
        )

    # -- messages ----------------------------------------------------------------------------

    def _view(self, node: int) -> _NodeView:
        if node not in self._nodes:
            # With secure aggregation the roster numbers parties, and each node says which it
            # is; without, the server numbers them as they come.
            party = None if self.roster is not None else len(self._nodes)
            self._nodes[node] = _NodeView(party=party)
        return self._nodes[node]

    def _message(
        self,
        node: int,
        config: ConfigRecord,
        message_type: str,
        *,
        sync_only: bool = False,
        take_snapshot: bool = False,
    ) -> Message:
        """One node's message: hefl's public settings, and what the node lacks, once."""
        view = self._view(node)
        fields = ConfigRecord(
            {
                "key-id": self.key_id,
                "length": self._length,
                "max-parties": self.max_parties,
                "max-examples": self.max_examples,
                "frac-bits": self.frac_bits,
                "min-parties": self.min_results,
                "snapshot-every": self.snapshot_every or 0,
                "round": self._round,
            }
        )
        if view.party is not None:
            fields["party"] = view.party
        if self.roster is not None:
            fields["secure-agg"] = str(self.secure_agg)
            fields["roster-fingerprint"] = self.roster.fingerprint
        content = RecordDict({_CONFIG: ConfigRecord(dict(config))})
        start = view.sent_to
        if start is None:
            content[_INITIAL] = self._initial
            start = 0
        first_kept = min(self._kept, default=self._round)
        if start < first_kept and self._snapshot is not None:
            snapshot_round, snapshot = self._snapshot
            content[_SNAPSHOT] = ArrayRecord({"snapshot": _ciphertext_array(snapshot)})
            fields["snapshot-round"] = snapshot_round
            start = snapshot_round
        rounds = list(range(start, self._round))
        if rounds:  # an empty list has no element type on the wire
            kept = [self._kept[r] for r in rounds]
            fields["rounds"] = rounds
            fields["counts"] = [len(k.parties) for k in kept]
            parties = [p for k in kept for p in k.parties]
            if parties:
                fields["parties"] = parties
            if self.roster is not None:
                fields["voids"] = [k.void for k in kept]
                fields["next-counts"] = [len(k.next_set or []) for k in kept]
                fields["next-parties"] = [p for k in kept for p in k.next_set or []]
            sums = {f"round-{r}": _ciphertext_array(k.aggregate) for r, k in zip(rounds, kept)}
            content[_AGGREGATES] = ArrayRecord(
                {name: array for (name, array), k in zip(sums.items(), kept) if not k.void}
            )
        if sync_only:
            fields["sync-only"] = True
        if take_snapshot:
            fields["take-snapshot"] = True
        content[_HEFL] = fields
        view.sent_to = self._round
        return Message(content=content, dst_node_id=node, message_type=message_type)

    def _snapshot_due(self) -> bool:
        if self.snapshot_every is None or self._round == 0:
            return False
        last = self._snapshot[0] if self._snapshot is not None else 0
        return self._round - last >= self.snapshot_every

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Samples nodes as FedAvg does (at most ``max_parties``); sends each what it
        lacks; asks one up-to-date node for a model snapshot when one is due."""
        sampled = [
            m.metadata.dst_node_id
            for m in super().configure_train(server_round, ArrayRecord(), config, grid)
        ]
        if self.roster is not None:
            # Every connected node: the members of the round's set train, the others ask to
            # be put back in the next one (a sum holds only members' updates).
            self._connected = set(grid.get_node_ids())
            sampled = sorted(self._connected)
        elif len(sampled) > self.max_parties:
            if not self._trimmed_warned:
                log.warning(
                    "%d nodes sampled, but a sum holds at most max_parties=%d: the others "
                    "sit out each such round",
                    len(sampled),
                    self.max_parties,
                )
                self._trimmed_warned = True
            sampled = sampled[: self.max_parties]
        self._sampled = sampled
        self._snapshot_asked = None
        # Strict secure aggregation: only members of the round's set seal (and snapshot).
        able = [n for n in sampled if self.roster is None or self._view(n).party in self._set]
        if self._snapshot_due() and able:
            current = [n for n in able if self._view(n).confirmed == self._round]
            self._snapshot_asked = (current or able)[0]
        return [
            self._message(
                node, config, MessageType.TRAIN, take_snapshot=node == self._snapshot_asked
            )
            for node in sampled
        ]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Samples nodes as FedAvg does; each applies what it lacks, then evaluates."""
        sampled = super().configure_evaluate(server_round, ArrayRecord(), config, grid)
        return [
            self._message(m.metadata.dst_node_id, config, MessageType.EVALUATE) for m in sampled
        ]

    # -- replies -----------------------------------------------------------------------------

    def _note(self, reply: Message) -> ConfigRecord | None:
        """Notes what a reply says of its node (its round, its skips, its error); returns
        its status, or ``None`` for an error or a reply without one."""
        node = reply.metadata.src_node_id
        view = self._view(node)
        if reply.has_error():
            view.error = reply.error.reason
            log.warning("node %d replied with an error: %s", node, view.error)
            return None  # what it was sent is not sent again (see the module docs)
        status = reply.content.config_records.get(_HEFL)
        if status is None or "next-round" not in status:
            view.error = "its reply has no hefl status: is HeflMod in the ClientApp's mods?"
            log.warning("node %d: %s", node, view.error)
            return None
        if self.roster is not None and not self._note_party(node, status):
            return None
        next_round = int(status["next-round"])  # type: ignore[arg-type]
        if not -1 <= next_round <= self._round:
            view.error = f"it says it is on round {next_round}, the server is on {self._round}"
            return None
        view.confirmed = view.sent_to = None if next_round < 0 else next_round
        view.error = str(status["behind"]) if "behind" in status else None
        for round_, reason in zip(status.get("skipped", []), status.get("reasons", [])):  # type: ignore[arg-type]
            log.warning(
                "node %d skipped round %d: its sum is not one of valid updates: %s",
                node,
                round_,
                reason,
            )
        return status

    def _note_party(self, node: int, status: ConfigRecord) -> bool:
        """Secure aggregation: notes the party number a node's reply names (its roster's),
        refusing one outside the roster, another than it named before, or one another
        connected node holds (a node that restarted under a new node id takes its number
        over from the old id once that id is gone)."""
        view = self._view(node)
        assert self.roster is not None
        party = status.get("party")
        error = None
        if not isinstance(party, int) or not 0 <= party < self.roster.parties:
            error = (
                f"its reply names party {party!r}, expected a party of the roster (0 to "
                f"{self.roster.parties - 1})"
            )
        elif view.party is not None and view.party != party:
            error = f"it said it is party {view.party}, now it says {party}"
        else:
            holders = [n for n, v in self._nodes.items() if v.party == party and n != node]
            if any(n in self._connected for n in holders):
                error = f"node {holders[0]} is party {party} already"
        if error is not None:
            view.error = error
            log.warning("node %d: %s", node, error)
            return False
        for other in (n for n, v in self._nodes.items() if v.party == party and n != node):
            self._nodes[other].party = None
        view.party = party
        return True

    def _sum(self) -> hefl.KeylessSum:
        """An empty sum of this run's current round: it takes an upload only from the party
        its header names, for this run and round."""
        return hefl.KeylessSum(
            self.key_id,
            self._length,
            max_parties=self.max_parties,
            max_examples=self.max_examples,
            frac_bits=self.frac_bits,
            round=self._round,
            run=self._run,
            secure_agg=self.secure_agg,
        )

    def _keep_snapshot(self, node: int, reply: Message, status: ConfigRecord) -> None:
        if _SNAPSHOT not in reply.content.array_records or node != self._snapshot_asked:
            return
        try:
            round_ = int(status["snapshot-round"])  # type: ignore[arg-type]
            if round_ != self._round:
                raise HeflFlowerError(f"a snapshot of round {round_}, asked for {self._round}")
            data = _ciphertext(reply.content.array_records[_SNAPSHOT], "snapshot")
            self._sum().check_snapshot(data, round_, self._view(node).party)
        except (hefl.HeflError, KeyError) as error:
            log.warning("node %d: model snapshot refused: %s", node, error)
            return
        self._snapshot = (round_, data)
        self._kept = {r: kept for r, kept in self._kept.items() if r >= round_}
        log.info("kept node %d's model snapshot of round %d", node, round_)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Adds the encrypted updates of the nodes on the current round (refusing any
        other reply, with its reason) and keeps the aggregate for the nodes to apply.
        Raises :class:`HeflRunError` below ``min_results`` valid updates.

        With secure aggregation only members of the round's party set send updates; the
        round is published when every member's is valid, and is void otherwise (no sum;
        the next round's set is the members that sent one, with the nodes that asked to be
        put back). The run stops when that set would hold fewer than ``min_results``."""
        replies = list(replies)
        if not self._sampled:
            return None, None  # no training this round (fraction_train=0)
        total = self._sum()
        failures: dict[int, str] = {n: "no reply before the timeout" for n in self._sampled}
        uploads: list[tuple[int, bytes, Message]] = []
        for reply in replies:
            node = reply.metadata.src_node_id
            status = self._note(reply)
            failures[node] = self._view(node).error or "refused"
            if status is None:
                continue
            self._keep_snapshot(node, reply, status)
            party = self._view(node).party
            if self.roster is not None and party not in self._set:
                # Not in this round's set: a node on this round that asks is put back in the
                # next one (its update for this round, if any, is not summed).
                del failures[node]
                if status.get("rejoin") and self._view(node).confirmed == self._round:
                    self._rejoining.add(party)  # type: ignore[arg-type]
                continue
            if "behind" in status:
                continue
            if self._view(node).confirmed != self._round:
                failures[node] = (
                    f"it is on round {self._view(node).confirmed}, the server on {self._round}: "
                    "an update of another model"
                )
                continue
            try:
                uploads.append(
                    (
                        self._view(node).party,
                        _ciphertext(reply.content.array_records[_UPDATE], "update"),
                        reply,
                    )
                )
            except (KeyError, HeflFlowerError) as error:
                failures[node] = f"no update: {error}"
        accepted: list[Message] = []
        for party, data, reply in sorted(uploads, key=lambda u: u[0]):
            node = reply.metadata.src_node_id
            try:
                total.add(data, party)
            except hefl.HeflError as error:
                failures[node] = f"update refused: {error}"
                log.warning("node %d: update refused: %s", node, error)
                continue
            del failures[node]
            accepted.append(reply)
        parties = sorted(self._view(r.metadata.src_node_id).party for r in accepted)  # type: ignore[type-var]
        if self.roster is not None:
            self._kept[self._round] = self._strict_outcome(server_round, total, parties, failures)
        elif len(accepted) < self.min_results:
            raise HeflRunError(self._failure(server_round, len(accepted), failures))
        else:
            self._kept[self._round] = _Kept(parties, total.to_bytes())
        self._round += 1
        for node, reason in failures.items():
            log.warning("round %d: node %d sent no valid update: %s", server_round, node, reason)
        log.info("aggregate_train: summed %d encrypted updates", total.count)
        contents = [r.content for r in accepted]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        clipped = {r.metadata.src_node_id: _clipped(r.content) for r in accepted}
        metrics[_CLIPPED] = sum(clipped.values())
        if self.roster is not None:
            metrics[_VOID] = int(self._kept[self._round - 1].void)
        if metrics[_CLIPPED]:
            log.warning(
                "round %d: %d update values beyond [-%g, %g] were clipped (by node: %s)",
                server_round,
                metrics[_CLIPPED],
                hefl.CLIP,
                hefl.CLIP,
                {n: c for n, c in clipped.items() if c},
            )
        return None, metrics

    def _strict_outcome(
        self,
        server_round: int,
        total: hefl.KeylessSum,
        submitted: list[int],
        failures: dict[int, str],
    ) -> _Kept:
        """Strict secure aggregation: the round's outcome (its sum when every member of its
        set sent a valid update, void otherwise) and the next round's set, which it becomes.
        Raises :class:`HeflRunError` when that set would hold fewer than ``min_results``."""
        missing = [p for p in self._set if p not in submitted]
        next_set = sorted(set(submitted) | self._rejoining)
        if missing and len(next_set) < self.min_results:
            headline = (
                f"round {server_round}: party set {self._set}, no valid update from parties "
                f"{missing}: the round is void, and the next round's set {next_set} would "
                f"hold fewer than min_results={self.min_results}: the run stops"
            )
            raise HeflRunError(self._failure(server_round, len(submitted), failures, headline))
        if missing:
            log.warning(
                "round %d is void: party set %s, no valid update from parties %s (by node: "
                "%s); nobody steps; the next round's set is %s",
                server_round,
                self._set,
                missing,
                failures,
                next_set,
            )
        kept = _Kept(submitted, b"" if missing else total.to_bytes(), bool(missing), next_set)
        self._set, self._rejoining = next_set, set()
        return kept

    def _failure(
        self, server_round: int, valid: int, failures: dict[int, str], headline: str = ""
    ) -> str:
        lines = [
            headline
            or f"round {server_round}: {valid} valid updates, fewer than min_results="
            f"{self.min_results}: the run stops"
        ]
        lines += [f"  node {node}: {reason}" for node, reason in sorted(failures.items())]
        missing_mod = any(
            ("KeyError" in reason and "arrays" in reason) or "HeflMod" in reason
            for reason in failures.values()
        )
        if missing_mod:
            lines.append(
                "  likely cause: HeflMod is missing from the ClientApp: "
                "ClientApp(mods=[hefl.flower.HeflMod()]) (the server sends no 'arrays' "
                "record; HeflMod turns its ciphertext into one)"
            )
        return "\n".join(lines)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Averages the whitelisted evaluation metrics (unweighted); notes what each node
        applied. Evaluation errors are logged, not fatal."""
        valid = []
        for reply in replies:
            status = self._note(reply)
            if status is not None and "behind" not in status:
                valid.append(reply.content)
        return self.evaluate_metrics_aggr_fn(valid, self.weighted_by_key) if valid else None


def _clipped(content: RecordDict) -> int:
    for record in content.metric_records.values():
        value = record.get(_CLIPPED)
        if isinstance(value, int):
            return value
    return 0


def mean_metrics(contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Unweighted mean of each numeric metric over the replies that carry it: a node's
    example count travels encrypted, so no weight is public. hefl's own entries are left
    out. (``weighted_by_key`` is FedAvg's interface; it is not used.)

    >>> a = RecordDict({"metrics": MetricRecord({"acc": 0.5, "hefl.clipped": 3})})
    >>> b = RecordDict({"metrics": MetricRecord({"acc": 0.75})})
    >>> mean_metrics([a, b], "num-examples")["acc"]
    0.625
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for content in contents:
        for record in content.metric_records.values():
            for metric, value in record.items():
                if _is_hefl(metric) or not isinstance(value, (int, float)):
                    continue
                sums[metric] = sums.get(metric, 0.0) + float(value)
                counts[metric] = counts.get(metric, 0) + 1
    return MetricRecord({name: sums[name] / counts[name] for name in sums})
