"""HE FedAvg for Flower: the server sums ciphertexts and never holds a key or a model.

Two pieces, used together (``pip install hefl[flower]``):

* :class:`HeflMod`, a ClientApp mod: ``ClientApp(mods=[HeflMod()])``. It keeps the plaintext
  global model in ``Context.state`` (which never leaves the node), decrypts and applies the
  encrypted aggregates the server broadcasts, hands your ``@app.train`` / ``@app.evaluate``
  functions ordinary arrays, and replies with your trained model as one encrypted, weighted
  update (the difference to the global model, weighted by ``num-examples``).
* :class:`HeFedAvg`, a ``flwr.serverapp.strategy.FedAvg`` for the ServerApp. It adds the
  encrypted updates with :class:`hefl.KeylessSum` (validated as ``hefl serve`` validates
  them) and broadcasts the encrypted sum as the next round's arrays.

hefl differs from Flower's usual FedAvg on purpose: the strategy's "apply" step runs on every
client, because the server cannot read an update. All clients start from the same public
initial arrays and apply the same aggregates in the same order, so their models stay
bit-identical while the server holds only ciphertext.

What the server sees: ciphertexts, the public key id, the public initial arrays, how many
updates each aggregate sums, each node's count of applied aggregates, and the metrics you
whitelist. What it does not see: any update, any model after round 0, any client's number of
examples (the weight travels encrypted), any metric you did not whitelist.

**The key** reaches a client only from its node config (``flower-supernode --node-config
"hefl-key='/path/to/hefl.key'"``) or the ``HEFL_KEY`` environment variable of the SuperNode,
both naming a key file of mode 0600 (``hefl.generate_key`` or ``hefl keygen``). It is never
read from ``run_config``, which the ServerApp sees too; a ``hefl-key`` entry there is refused.

**Metrics**: a client's training metrics would leak (a loss on local data, the number of
examples), so :class:`HeflMod` drops every metric of a train or evaluate reply unless you
whitelist it (``HeflMod(train_metrics=["train-loss"], evaluate_metrics=["eval-acc"])``).
``num-examples`` of a train reply is always consumed: it becomes the encrypted weight.

**Catch-up**: a node that missed rounds (started late, not sampled, timed out) is sent the
initial arrays and every aggregate it has not applied, in order, with its next message;
after the last round :meth:`HeFedAvg.start` sends the final aggregate to any node still
behind, so all connected nodes end with identical models.

Limits: every array must be float32; every value of an update (trained minus global model)
is clipped to [-8, 8] and carried with a resolution of 2^-24 (``hefl.Envelope``);
``num-examples`` must not exceed ``max_examples``; a server-side ``evaluate_fn`` is refused
(the server has no model, by design).

Example ServerApp and ClientApp::

    from flwr.app import ArrayRecord, Context
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from hefl.flower import HeflMod, HeFedAvg

    client = ClientApp(mods=[HeflMod()])

    @client.train()
    def train(msg, context):  # msg.content["arrays"] is the plaintext global model
        ...
        return Message(RecordDict({"arrays": trained, "metrics": MetricRecord(
            {"num-examples": n})}), reply_to=msg)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = HeFedAvg(key_id=context.run_config["hefl-key-id"], max_examples=60_000)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=10)
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import hefl

try:
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
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

__all__ = ["HeflMod", "HeFedAvg", "KEY_NODE_CONFIG", "KEY_ENV", "MODEL_OUT_NODE_CONFIG"]

log = logging.getLogger("hefl.flower")

KEY_NODE_CONFIG = "hefl-key"
"""The node-config entry naming a client's key file."""

KEY_ENV = "HEFL_KEY"
"""The environment variable naming a client's key file (when the node config has none)."""

MODEL_OUT_NODE_CONFIG = "hefl-model-out"
"""Optional node-config entry: an ``.npz`` path where the mod saves the node's plaintext model
each time it applies aggregates (owner-only file, on the node)."""

# Names in messages: everything hefl adds is under "hefl." and removed before user code runs.
_CONFIG = "config"
_ARRAYS = "arrays"
_METRICS = "metrics"
_INITIAL = "hefl.initial"
_UPDATE = "hefl.update"
_AGGREGATE = "hefl.aggregate"
_PREFIX = "hefl."
_KEY_ID = "hefl.key-id"
_LENGTH = "hefl.length"
_MAX_PARTIES = "hefl.max-parties"
_FRAC_BITS = "hefl.frac-bits"
_MAX_EXAMPLES = "hefl.max-examples"
_FIRST = "hefl.first"
_PARTIES = "hefl.parties"
_SYNC_ONLY = "hefl.sync-only"
_APPLIED = "hefl.applied"
# Node-local state.
_STATE_MODEL = "hefl.model"
_STATE = "hefl.state"


class HeflFlowerError(hefl.HeflError):
    """A message that does not follow the HE FedAvg protocol (missing records, a model of
    another shape, aggregates out of order, a key from run_config)."""


# --- helpers shared by both sides -----------------------------------------------------------


def _ciphertext_array(data: bytes) -> Array:
    return Array(dtype="uint8", shape=(len(data),), stype=hefl.STYPE, data=data)


def _model_length(arrays: ArrayRecord) -> int:
    total = 0
    for name, array in arrays.items():
        if array.stype != "numpy.ndarray" or array.dtype != "float32":
            raise TypeError(
                f"HE FedAvg needs float32 numpy arrays; {name!r} is {array.dtype} "
                f"({array.stype}): convert the model with .astype(numpy.float32)"
            )
        total += int(np.prod(array.shape, dtype=np.int64))
    if total == 0:
        raise ValueError("the model has no values")
    return total


def _flat(arrays: ArrayRecord) -> np.ndarray:
    parts = [array.numpy().ravel() for array in arrays.values()]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _unflat(flat: np.ndarray, like: ArrayRecord) -> ArrayRecord:
    out = ArrayRecord()
    offset = 0
    for name, array in like.items():
        size = int(np.prod(array.shape, dtype=np.int64))
        out[name] = Array(flat[offset : offset + size].reshape(array.shape).astype(np.float32))
        offset += size
    return out


def _kept_metrics(metrics: Iterable[MetricRecord], allowed: Collection[str]) -> MetricRecord:
    kept = MetricRecord()
    for record in metrics:
        for name, value in record.items():
            if name in allowed:
                kept[name] = value
    return kept


# --- the client: HeflMod --------------------------------------------------------------------


_key_cache: dict[tuple[str, int, int], hefl.SecretKey] = {}


def _load_key(path: str) -> hefl.SecretKey:
    stat = os.stat(path)
    cache_key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_ino)
    if cache_key not in _key_cache:
        _key_cache[cache_key] = hefl.SecretKey.load(path)
    return _key_cache[cache_key]


@dataclass
class HeflMod:
    """A ClientApp mod that encrypts train replies and applies encrypted aggregates.

    Use it as ``ClientApp(mods=[HeflMod()])`` with a ServerApp running :class:`HeFedAvg`.
    Your train function receives the plaintext global model under ``"arrays"`` and the
    server's config (without hefl's entries) under ``"config"``; it returns its trained
    model (an ``ArrayRecord`` of the same float32 arrays) and a ``MetricRecord`` with
    ``num-examples``. The mod replaces that reply with one ciphertext.

    Args:
        train_metrics: metric names a train reply may pass to the server in plaintext;
            everything else is dropped (default: none).
        evaluate_metrics: the same for evaluate replies (default: none).
        examples_key: the metric holding the number of training examples, the FedAvg weight.

    Evaluate messages also carry catch-up aggregates: register an ``@app.evaluate()``
    function, or run the strategy with ``fraction_evaluate=0.0`` (Flower refuses a message
    type the ClientApp has no function for, before any mod runs).

    The key file comes from node config ``hefl-key`` or else environment ``HEFL_KEY``, never
    from ``run_config``. With node config ``hefl-model-out`` set to a path, the node writes its
    current model there (``numpy.savez``, mode 0600) whenever it applies aggregates.

    >>> from flwr.clientapp import ClientApp
    >>> app = ClientApp(mods=[HeflMod(train_metrics=["train-loss"])])
    """

    train_metrics: Collection[str] = ()
    evaluate_metrics: Collection[str] = ()
    examples_key: str = "num-examples"
    _key_env: str = field(default=KEY_ENV, repr=False)

    def __call__(
        self, msg: Message, ctx: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        kind = msg.metadata.message_type.split(".")[0]
        if kind not in (MessageType.TRAIN, MessageType.EVALUATE):
            return call_next(msg, ctx)
        if msg.has_error() or _CONFIG not in msg.content.config_records:
            return call_next(msg, ctx)
        config = msg.content.config_records[_CONFIG]
        if _KEY_ID not in config:
            raise HeflFlowerError(
                "HeflMod received a message without hefl's fields: run the ServerApp with "
                "hefl.flower.HeFedAvg"
            )
        key = self._key(ctx, str(config[_KEY_ID]))
        model, applied = self._catch_up(msg.content, config, ctx, key)
        if kind == MessageType.TRAIN and bool(config.get(_SYNC_ONLY, False)):
            return Message(
                RecordDict({_METRICS: MetricRecord({_APPLIED: applied})}), reply_to=msg
            )

        msg.content = self._user_content(msg.content, model)
        reply = call_next(msg, ctx)
        if reply.has_error():
            return reply
        if kind == MessageType.TRAIN:
            reply.content = self._sealed_reply(reply.content, model, config, key, applied)
        else:
            metrics = _kept_metrics(reply.content.metric_records.values(), self.evaluate_metrics)
            metrics[_APPLIED] = applied
            reply.content = RecordDict({_METRICS: metrics})
        return reply

    def _key(self, ctx: Context, expected_id: str) -> hefl.SecretKey:
        path = ctx.node_config.get(KEY_NODE_CONFIG) or os.environ.get(self._key_env)
        if KEY_NODE_CONFIG in ctx.run_config or (
            path and str(path) in map(str, ctx.run_config.values())
        ):
            raise HeflFlowerError(
                f"run_config has a {KEY_NODE_CONFIG!r} entry: the ServerApp sees run_config, "
                "so a key must never travel there; give each SuperNode "
                f"--node-config \"{KEY_NODE_CONFIG}='/path/to/hefl.key'\" or {KEY_ENV}"
            )
        if not path:
            raise HeflFlowerError(
                f"no hefl key on this node: start the SuperNode with --node-config "
                f"\"{KEY_NODE_CONFIG}='/path/to/hefl.key'\" or set {KEY_ENV}"
            )
        key = _load_key(str(path))
        if key.key_id != expected_id:
            raise hefl.KeyMismatchError(
                f"this node's key {path} has key id {key.key_id}, the server expects "
                f"{expected_id}"
            )
        return key

    def _catch_up(
        self, content: RecordDict, config: ConfigRecord, ctx: Context, key: hefl.SecretKey
    ) -> tuple[ArrayRecord, int]:
        """Applies the initial arrays and the aggregates this node has not applied yet."""
        state = ctx.state
        length = int(config[_LENGTH])  # type: ignore[arg-type]
        max_parties = int(config[_MAX_PARTIES])  # type: ignore[arg-type]
        frac_bits = int(config[_FRAC_BITS])  # type: ignore[arg-type]
        if _STATE_MODEL in state.array_records:
            model = state.array_records[_STATE_MODEL]
            applied = int(state.config_records[_STATE][_APPLIED])  # type: ignore[arg-type]
        elif _INITIAL in content.array_records:
            model = content.array_records[_INITIAL]
            applied = 0
            if _model_length(model) != length:
                raise HeflFlowerError(
                    f"initial arrays hold {_model_length(model)} values, expected {length}"
                )
        else:
            raise HeflFlowerError(
                "this node has no model and the server sent no initial arrays; the server "
                "resends them after this error"
            )
        first = int(config[_FIRST])  # type: ignore[arg-type]
        parties = [int(p) for p in config.get(_PARTIES, [])]  # type: ignore[union-attr]
        aggregates = content.array_records.get(_ARRAYS, ArrayRecord())
        if len(aggregates) != len(parties):
            raise HeflFlowerError(
                f"{len(aggregates)} aggregates but {len(parties)} party counts"
            )
        if first > applied:
            raise HeflFlowerError(
                f"the server sent aggregates from number {first}, this node has applied "
                f"{applied}: it cannot skip any; the server resends them after this error"
            )
        todo = [
            (index, array, count)
            for index, (array, count) in enumerate(zip(aggregates.values(), parties), first)
            if index >= applied
        ]
        if todo or _STATE_MODEL not in state.array_records:
            envelope = hefl.Envelope(
                key, length, max_parties=max_parties, frac_bits=frac_bits
            )
            flat = _flat(model)
            for index, array, count in todo:
                if array.stype != hefl.STYPE:
                    raise HeflFlowerError(
                        f"aggregate {index} has stype {array.stype!r}, expected {hefl.STYPE!r}"
                    )
                flat = flat + envelope.open(array.data, count)
                applied = index + 1
            model = _unflat(flat, model)
            state.array_records[_STATE_MODEL] = model
            state.config_records[_STATE] = ConfigRecord({_APPLIED: applied})
            self._save(ctx, model, applied)
        return model, applied

    @staticmethod
    def _save(ctx: Context, model: ArrayRecord, applied: int) -> None:
        out = ctx.node_config.get(MODEL_OUT_NODE_CONFIG)
        if not out:
            return
        path = Path(str(out))
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: array.numpy() for name, array in model.items()}
        arrays["hefl_applied"] = np.array(applied)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as file:  # mkstemp: mode 0600
            np.savez(file, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)

    @staticmethod
    def _user_content(content: RecordDict, model: ArrayRecord) -> RecordDict:
        """The message the user's function sees: the model and the config without hefl's
        entries, plus any other record the server sent."""
        user = RecordDict()
        for name, record in content.items():
            if name in (_ARRAYS, _INITIAL, _CONFIG):
                continue
            user[name] = record
        config = content.config_records[_CONFIG]
        user[_ARRAYS] = model
        user[_CONFIG] = ConfigRecord(
            {k: v for k, v in config.items() if not k.startswith(_PREFIX)}
        )
        return user

    def _sealed_reply(
        self,
        content: RecordDict,
        model: ArrayRecord,
        config: ConfigRecord,
        key: hefl.SecretKey,
        applied: int,
    ) -> RecordDict:
        arrays = list(content.array_records.values())
        if len(arrays) != 1:
            raise HeflFlowerError(
                f"the train function must reply with one ArrayRecord (the trained model), "
                f"got {len(arrays)}"
            )
        trained = arrays[0]
        if [(n, tuple(a.shape)) for n, a in trained.items()] != [
            (n, tuple(a.shape)) for n, a in model.items()
        ]:
            raise HeflFlowerError(
                "the trained model's arrays (names and shapes) differ from the global model's"
            )
        _model_length(trained)  # float32 only
        examples = None
        for record in content.metric_records.values():
            if self.examples_key in record:
                examples = record[self.examples_key]
        if not isinstance(examples, (int, float)) or examples <= 0:
            raise HeflFlowerError(
                f"the train reply needs a positive {self.examples_key!r} metric (the FedAvg "
                f"weight), got {examples!r}"
            )
        max_examples = int(config[_MAX_EXAMPLES])  # type: ignore[arg-type]
        if examples > max_examples:
            raise HeflFlowerError(
                f"{self.examples_key} is {examples}, more than max_examples={max_examples} "
                "of the server's HeFedAvg: raise max_examples there"
            )
        envelope = hefl.Envelope(
            key,
            int(config[_LENGTH]),  # type: ignore[arg-type]
            max_parties=int(config[_MAX_PARTIES]),  # type: ignore[arg-type]
            frac_bits=int(config[_FRAC_BITS]),  # type: ignore[arg-type]
        )
        delta = _flat(trained) - _flat(model)
        sealed = envelope.seal(delta, weight=float(examples) / max_examples)
        metrics = _kept_metrics(
            content.metric_records.values(),
            [m for m in self.train_metrics if m != self.examples_key],
        )
        metrics[_APPLIED] = applied
        return RecordDict(
            {_ARRAYS: ArrayRecord({_UPDATE: _ciphertext_array(sealed)}), _METRICS: metrics}
        )


# --- the server: HeFedAvg -------------------------------------------------------------------


class HeFedAvg(FedAvg):
    """FedAvg whose server adds encrypted updates without a key and holds no model.

    Args:
        key_id: the public key id of the clients' shared key (``hefl.key_id(path)`` or the
            first word ``hefl keygen`` prints). The server needs nothing else of the key.
        max_examples: an upper bound on any node's ``num-examples``, the same for all;
            a node's weight is ``num-examples / max_examples``. Keep it close to the real
            largest count (within a factor of about 100) to keep full precision.
        max_parties: the most replies one aggregate may sum (sets the fixed-point encoding;
            default 100).
        frac_bits: fractional bits of the fixed point (default 16, hefl's): every value of
            an update is rounded, without bias, to a multiple of 2^-frac_bits, so the
            aggregate is within 2^-frac_bits of the plaintext FedAvg per coordinate; 24
            brings that to 6e-8 for 8 more bits per value on the wire.
        **kwargs: passed to ``FedAvg`` (``fraction_train``, ``min_train_nodes``, ...).

    ``start`` refuses a server-side ``evaluate_fn``. Its result's ``arrays`` is the last
    encrypted aggregate; the trained model lives on the clients.

    >>> strategy = HeFedAvg(key_id="ab" * 32, max_examples=60_000, min_available_nodes=3)
    >>> strategy.start(grid=None, initial_arrays=ArrayRecord(), evaluate_fn=lambda r, a: None)
    Traceback (most recent call last):
    ...
    ValueError: HeFedAvg holds no model (the server cannot decrypt, by design): evaluate on the clients instead of passing evaluate_fn
    """

    def __init__(
        self,
        *,
        key_id: str,
        max_examples: int,
        max_parties: int = hefl.DEFAULT_MAX_PARTIES,
        frac_bits: int = hefl.DEFAULT_FRAC_BITS,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("train_metrics_aggr_fn", _mean_metrics)
        kwargs.setdefault("evaluate_metrics_aggr_fn", _mean_metrics)
        super().__init__(**kwargs)  # type: ignore[arg-type]
        hefl.KeylessSum(key_id, 1, max_parties=max_parties, frac_bits=frac_bits)  # validates
        if not isinstance(max_examples, int) or max_examples <= 0:
            raise ValueError(f"max_examples must be a positive int, got {max_examples!r}")
        self.key_id = key_id
        self.max_examples = max_examples
        self.max_parties = max_parties
        self.frac_bits = frac_bits
        self._initial: ArrayRecord | None = None
        self._length = 0
        self._aggregates: list[tuple[bytes, int]] = []
        self._applied: dict[int, int] = {}

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
        every connected node up to the last aggregate."""
        if evaluate_fn is not None:
            raise ValueError(
                "HeFedAvg holds no model (the server cannot decrypt, by design): evaluate "
                "on the clients instead of passing evaluate_fn"
            )
        self._length = _model_length(initial_arrays)
        self._initial = initial_arrays
        self._aggregates = []
        self._applied = {}
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
        """Sends every connected node that is behind the aggregates it has not applied
        (without training); returns the nodes still behind afterwards."""
        behind = [n for n in grid.get_node_ids() if self._applied.get(n) != len(self._aggregates)]
        if behind and self._aggregates:
            messages = [
                self._message(node, ConfigRecord({_SYNC_ONLY: True}), MessageType.TRAIN)
                for node in behind
            ]
            for reply in grid.send_and_receive(messages, timeout=timeout):
                self._note_applied(reply)
        still = [n for n in behind if self._applied.get(n) != len(self._aggregates)]
        if still:
            log.warning("nodes %s did not apply the last aggregate", still)
        return still

    # -- messages ----------------------------------------------------------------------------

    def _message(self, node: int, config: ConfigRecord, message_type: str) -> Message:
        """One node's message: what it has not applied, and hefl's public parameters."""
        known = self._applied.get(node)
        first = known if known is not None else 0
        content = RecordDict()
        if known is None:
            assert self._initial is not None
            content[_INITIAL] = self._initial
        content[_ARRAYS] = ArrayRecord(
            {
                f"{_AGGREGATE}.{index}": _ciphertext_array(data)
                for index, (data, _) in enumerate(self._aggregates[first:], first)
            }
        )
        config = ConfigRecord(dict(config))
        config[_KEY_ID] = self.key_id
        config[_LENGTH] = self._length
        config[_MAX_PARTIES] = self.max_parties
        config[_FRAC_BITS] = self.frac_bits
        config[_MAX_EXAMPLES] = self.max_examples
        config[_FIRST] = first
        if self._aggregates[first:]:  # an empty list has no element type on the wire
            config[_PARTIES] = [count for _, count in self._aggregates[first:]]
        content[_CONFIG] = config
        return Message(content=content, dst_node_id=node, message_type=message_type)

    def _per_node(self, messages: Iterable[Message], message_type: str) -> list[Message]:
        out = []
        for message in messages:
            config = message.content.config_records[self.configrecord_key]
            out.append(self._message(message.metadata.dst_node_id, config, message_type))
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Samples nodes as FedAvg does; sends each the aggregates it has not applied."""
        sampled = super().configure_train(server_round, ArrayRecord(), config, grid)
        return self._per_node(sampled, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Samples nodes as FedAvg does; each applies what it missed, then evaluates."""
        sampled = super().configure_evaluate(server_round, ArrayRecord(), config, grid)
        return self._per_node(sampled, MessageType.EVALUATE)

    # -- replies -----------------------------------------------------------------------------

    def _note_applied(self, reply: Message) -> int | None:
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("node %d replied with an error: %s", node, reply.error.reason)
            self._applied.pop(node, None)  # resend everything next time
            return None
        applied = None
        for record in reply.content.metric_records.values():
            if _APPLIED in record:
                applied = int(record[_APPLIED])  # type: ignore[arg-type]
        if applied is None or not 0 <= applied <= len(self._aggregates):
            log.warning("node %d did not say which aggregates it applied", node)
            self._applied.pop(node, None)
            return None
        self._applied[node] = applied
        return applied

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Adds the encrypted updates (refusing plaintext, stale or invalid ones) and
        returns the encrypted aggregate as the next round's arrays."""
        total = hefl.KeylessSum(
            self.key_id, self._length, max_parties=self.max_parties, frac_bits=self.frac_bits
        )
        accepted: list[RecordDict] = []
        for reply in replies:
            node = reply.metadata.src_node_id
            applied = self._note_applied(reply)
            if applied is None:
                continue
            if applied != len(self._aggregates):
                log.warning(
                    "node %d trained on %d aggregates, the current model has %d: refused",
                    node,
                    applied,
                    len(self._aggregates),
                )
                continue
            try:
                total.add(self._ciphertext_of(reply))
            except (hefl.HeflError, HeflFlowerError) as error:
                log.warning("node %d: update refused: %s", node, error)
                continue
            accepted.append(reply.content)
        log.info("aggregate_train: summed %d encrypted updates", total.count)
        if total.count == 0:
            return None, None
        self._aggregates.append((total.to_bytes(), total.count))
        index = len(self._aggregates) - 1
        arrays = ArrayRecord({f"{_AGGREGATE}.{index}": _ciphertext_array(self._aggregates[-1][0])})
        metrics = self.train_metrics_aggr_fn(accepted, self.weighted_by_key)
        return arrays, metrics

    @staticmethod
    def _ciphertext_of(reply: Message) -> bytes:
        records = list(reply.content.array_records.values())
        arrays = [array for record in records for array in record.values()]
        if len(arrays) != 1 or arrays[0].stype != hefl.STYPE:
            found = sorted({a.stype for a in arrays}) or ["nothing"]
            raise HeflFlowerError(
                f"expected one array of stype {hefl.STYPE!r} (a hefl ciphertext), got "
                f"{len(arrays)} of {found}: a plaintext reply is refused (is HeflMod in the "
                "ClientApp's mods?)"
            )
        return arrays[0].data

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Averages the whitelisted evaluation metrics; notes what each node applied."""
        valid = []
        for reply in replies:
            if self._note_applied(reply) is not None:
                valid.append(reply.content)
        return self.evaluate_metrics_aggr_fn(valid, self.weighted_by_key) if valid else None

    def summary(self) -> None:
        """Log the configuration."""
        super().summary()
        log.info(
            "HE FedAvg: key id %s, max_examples %d, max_parties %d",
            self.key_id,
            self.max_examples,
            self.max_parties,
        )


def _mean_metrics(contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Unweighted mean of each numeric metric over the replies that have it (the weights
    travel encrypted); hefl's own bookkeeping entries are left out."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for content in contents:
        for record in content.metric_records.values():
            for name, value in record.items():
                if name.startswith(_PREFIX) or not isinstance(value, (int, float)):
                    continue
                sums[name] = sums.get(name, 0.0) + float(value)
                counts[name] = counts.get(name, 0) + 1
    return MetricRecord({name: sums[name] / counts[name] for name in sums})

