"""Unit tests of the binding: keys, sealing, keyless sums, and refusal of bad input."""

from __future__ import annotations

import doctest
import math
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import hefl
import hefl.errors
from wire import body_bits

REPO = Path(__file__).resolve().parents[2]


def vector(n: int, seed: int, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


# --- keys -------------------------------------------------------------------------------


def test_generated_key_file_is_private_and_loads_with_its_id(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "hefl.key"
    key_id = hefl.generate_key(path)
    assert len(key_id) == 64 and int(key_id, 16) >= 0
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert hefl.key_id(path) == key_id
    assert hefl.SecretKey.load(path).key_id == key_id
    assert key_id in repr(hefl.SecretKey.load(path))


def test_generate_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "hefl.key"
    first = hefl.generate_key(path)
    with pytest.raises(hefl.KeyFileExistsError, match="refusing to overwrite"):
        hefl.generate_key(path)
    assert hefl.key_id(path) == first
    assert hefl.generate_key(path, force=True) != first


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "hefl.key"
    hefl.generate_key(path)
    path.chmod(mode)
    for load in (hefl.SecretKey.load, hefl.key_id):
        with pytest.raises(hefl.InsecureKeyFileError, match=f"{mode:04o}.*chmod 600"):
            load(path)
    with pytest.raises(PermissionError):
        hefl.SecretKey.load(path)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "not a hefl key file"),
        (b"{}", "not a hefl key file"),
        (b"\xff\xfe garbage", "not a hefl key file"),
        (b"x" * 5000, "at most 4096 bytes"),
    ],
)
def test_malformed_key_file_is_refused(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "hefl.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(hefl.KeyFileError, match=match):
        hefl.SecretKey.load(path)


def test_edited_key_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hefl.key"
    key_id = hefl.generate_key(path)
    text = path.read_text().replace(key_id, "0" * 64)
    path.write_text(text)
    with pytest.raises(hefl.KeyFileError, match="hashes to"):
        hefl.SecretKey.load(path)


def test_missing_key_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(hefl.KeyFileError, match="No such file"):
        hefl.SecretKey.load(tmp_path / "absent.key")
    with pytest.raises(hefl.KeyFileError, match="a directory"):
        hefl.SecretKey.load(tmp_path)


def test_key_from_hefl_keygen_loads_in_python(tmp_path: Path) -> None:
    binary = os.environ.get("HEFL_BIN") or shutil.which("hefl") or REPO / "target/debug/hefl"
    if not Path(binary).exists():
        pytest.skip(f"no hefl binary at {binary} (build it with `cargo build`)")
    path = tmp_path / "cli.key"
    out = subprocess.run(
        [str(binary), "keygen", "--out", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.split()[0] == hefl.SecretKey.load(path).key_id


# --- seal, sum, open --------------------------------------------------------------------


def test_example_weighted_mean_of_three_parties(key: hefl.SecretKey) -> None:
    n = 5000
    updates = [vector(n, seed) for seed in range(3)]
    examples = [20, 50, 100]
    envelope = hefl.Envelope(key, n, max_parties=3, max_examples=100)
    total = hefl.KeylessSum(key.key_id, n, max_parties=3, max_examples=100)
    for party, (update, count) in enumerate(zip(updates, examples)):
        total.add(envelope.seal(update, count, party=party), party)
    assert total.count == len(total) == 3
    aggregate = total.to_bytes()
    mean = envelope.open(aggregate, parties=[0, 1, 2])
    expected = sum(c * u.astype(np.float64) for u, c in zip(updates, examples)) / sum(examples)
    assert mean.dtype == np.float32 and mean.shape == (n,)
    # Each rounded value is within one step 2^-16 of its own; the weighted mean of the
    # rounded values is exact, so within 2^-16 of the exact mean, then rounded to float32.
    ulp = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(mean - expected) <= 2.0**-16 + ulp / 2)
    fine = hefl.Envelope(key, n, max_parties=3, max_examples=100, frac_bits=24)
    fine_total = hefl.KeylessSum(key.key_id, n, max_parties=3, max_examples=100, frac_bits=24)
    for party, (update, count) in enumerate(zip(updates, examples)):
        fine_total.add(fine.seal(update, count, party=party), party)
    fine_mean = fine.open(fine_total.to_bytes(), parties=[0, 1, 2])
    np.testing.assert_allclose(fine_mean, expected, atol=1e-6)
    # Decoding is deterministic: every client gets the same bits.
    assert np.array_equal(envelope.open(aggregate, parties=[0, 1, 2]), mean)


@pytest.mark.parametrize(
    "max_parties, max_examples, frac_bits",
    [(3, 100, 16), (10, 250, 24), (100, 2621, 16), (21, 60_000, 16), (3, 10**7, 14)],
)
def test_bits_per_value_are_as_documented(
    key: hefl.SecretKey, max_parties: int, max_examples: int, frac_bits: int
) -> None:
    """docs/flower-and-python.md: frac_bits + 5 + ceil(log2(P x max + 1)) + ceil(log2 P)."""
    envelope = hefl.Envelope(
        key, 10, max_parties=max_parties, max_examples=max_examples, frac_bits=frac_bits
    )
    documented = (
        frac_bits
        + 5
        + math.ceil(math.log2(max_parties * max_examples + 1))
        + math.ceil(math.log2(max_parties))
    )
    assert body_bits(envelope.seal(np.zeros(10, np.float32), party=0)) == documented


def test_values_beyond_the_clip_bound_are_clipped(key: hefl.SecretKey) -> None:
    envelope = hefl.Envelope(key, 3, max_parties=1)
    total = hefl.KeylessSum(key.key_id, 3, max_parties=1)
    total.add(envelope.seal(np.array([100, -100, 1], np.float32), party=0), 0)
    opened = envelope.open(total.to_bytes(), [0])
    assert opened.tolist() == [8.0, -8.0, 1.0] and hefl.CLIP == 8.0


def test_the_input_array_is_not_modified(key: hefl.SecretKey) -> None:
    values = vector(100, 1)
    before = values.copy()
    hefl.Envelope(key, 100).seal(values, party=0)
    assert np.array_equal(values, before)


def test_envelope_properties(key: hefl.SecretKey) -> None:
    envelope = hefl.Envelope(key, 7, max_parties=5, max_examples=9, frac_bits=12)
    assert (envelope.length, envelope.max_parties, envelope.key_id) == (7, 5, key.key_id)
    assert (envelope.max_examples, envelope.frac_bits) == (9, 12)
    assert "length=7" in repr(envelope) and "max_examples=9" in repr(envelope)
    default = hefl.Envelope(key, 7)
    assert (default.max_parties, default.max_examples) == (hefl.DEFAULT_MAX_PARTIES, 1)
    assert default.frac_bits == hefl.DEFAULT_FRAC_BITS


# --- bad input from Python --------------------------------------------------------------


@pytest.mark.parametrize(
    "values, error, match",
    [
        (np.zeros(10, np.float64), TypeError, "dtype float32, got float64"),
        (np.zeros(10, np.int32), TypeError, "dtype float32, got int32"),
        (np.zeros(20, np.float32)[::2], ValueError, "C-contiguous"),
        (np.zeros(9, np.float32), hefl.LengthError, "an update of 9 values, expected 10"),
        (np.zeros(11, np.float32), hefl.LengthError, "an update of 11 values, expected 10"),
        (np.zeros((2, 5), np.float32), hefl.LengthError, "1-D array, got shape \\[2, 5\\]"),
        ([0.0] * 10, TypeError, "numpy.ndarray of dtype float32, got list"),
        (b"0" * 40, TypeError, "got bytes"),
        (np.array([np.nan] + [0.0] * 9, np.float32), hefl.EncodeError, "NaN|finite"),
        (np.array([np.inf] + [0.0] * 9, np.float32), hefl.EncodeError, "NaN|finite"),
    ],
)
def test_seal_refuses_bad_values(
    key: hefl.SecretKey, values: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        hefl.Envelope(key, 10).seal(values, party=0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "examples, error, match",
    [
        (0, hefl.EncodeError, "0 samples, expected 1 to 10"),
        (11, hefl.EncodeError, "11 samples, expected 1 to 10"),
        (-1, OverflowError, None),
        (1.5, TypeError, None),
    ],
)
def test_seal_refuses_an_example_count_outside_1_to_max(
    key: hefl.SecretKey, examples: object, error: type[Exception], match: str | None
) -> None:
    with pytest.raises(error, match=match):
        hefl.Envelope(key, 3, max_examples=10).seal(np.ones(3, np.float32), examples, party=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 1 << 26])
def test_envelope_and_sum_refuse_impossible_lengths(key: hefl.SecretKey, length: int) -> None:
    with pytest.raises(hefl.LengthError, match="length must be between 1 and"):
        hefl.Envelope(key, length)
    with pytest.raises(hefl.LengthError, match="length must be between 1 and"):
        hefl.KeylessSum(key.key_id, length)


def test_max_parties_zero_is_a_config_error(key: hefl.SecretKey) -> None:
    with pytest.raises(hefl.ConfigError):
        hefl.Envelope(key, 3, max_parties=0)
    with pytest.raises(hefl.ConfigError):
        hefl.KeylessSum(key.key_id, 3, max_parties=0)
    with pytest.raises(hefl.ConfigError):
        hefl.Envelope(key, 3, max_examples=0)
    with pytest.raises(OverflowError):
        hefl.Envelope(key, 3, max_parties=-1)


def test_bounds_that_do_not_fit_name_settings_that_do(key: hefl.SecretKey) -> None:
    """100 parties of up to 60,000 examples at 2^-16 exceed the GLWE noise budget; the
    error names the numbers, and each setting it suggests does fit (one more does not)."""
    with pytest.raises(hefl.ConfigError) as raised:
        hefl.KeylessSum(key.key_id, 3, max_parties=100, max_examples=60_000)
    message = str(raised.value)
    assert "max_parties=100, max_examples=60000, frac_bits=16 do not fit" in message
    assert "could fail to decode" in message and "budget" in message

    fits = dict(re.findall(r"(frac_bits|max_examples|max_parties)=(\d+)(?: or|$)", message))
    assert set(fits) == {"frac_bits", "max_examples", "max_parties"}, message
    bounds = {"max_parties": 100, "max_examples": 60_000, "frac_bits": 16}
    for name, value in fits.items():
        fitting = {**bounds, name: int(value)}
        hefl.KeylessSum(key.key_id, 3, **fitting)
        hefl.Envelope(key, 3, **fitting)
        with pytest.raises(hefl.ConfigError):  # the largest: one more does not fit
            hefl.KeylessSum(key.key_id, 3, **{**fitting, name: int(value) + 1})


@pytest.mark.parametrize("key_id", ["", "abc", "g" * 64, "0" * 63])
def test_sum_refuses_a_malformed_key_id(key_id: str) -> None:
    with pytest.raises(ValueError, match="expected 64 hex digits"):
        hefl.KeylessSum(key_id, 3)


def seal3(key: hefl.SecretKey, seed: int = 7, party: int = 0) -> bytes:
    """A fresh upload of 300 values by ``party`` for a federation of 3 (each call a new
    encryption)."""
    return hefl.Envelope(key, 300, max_parties=3).seal(vector(300, seed), party=party)


@pytest.fixture(scope="module")
def sealed(key: hefl.SecretKey) -> bytes:
    return seal3(key)


@pytest.mark.parametrize(
    "mangle, error, match",
    [
        (lambda m: m[:5], hefl.MessageError, "truncated"),
        (lambda m: m[:100], hefl.MessageError, "truncated|header"),
        (lambda m: m[:-1], hefl.MessageError, "truncated|body"),
        (lambda m: m + b"\0", hefl.MessageError, "unexpected bytes"),
        (lambda m: b"", hefl.MessageError, "truncated"),
        (lambda m: b"GIF89a" + m[6:], hefl.MessageError, "not a hefl ciphertext"),
        (lambda m: os.urandom(len(m)), hefl.MessageError, "not a hefl ciphertext"),
        (lambda m: m[:8] + b"\x09\x00" + m[10:], hefl.MessageError, "version 9"),
    ],
)
def test_sum_refuses_truncated_or_foreign_bytes(
    key: hefl.SecretKey, sealed: bytes, mangle, error: type[Exception], match: str
) -> None:
    total = hefl.KeylessSum(key.key_id, 300, max_parties=3)
    total.add(seal3(key, party=1), 1)
    before = total.to_bytes()
    with pytest.raises(error, match=match):
        total.add(mangle(sealed), 0)
    assert total.count == 1 and total.to_bytes() == before


def test_sum_refuses_another_key_naming_both_ids(
    key: hefl.SecretKey, other_key: hefl.SecretKey
) -> None:
    foreign = hefl.Envelope(other_key, 300, max_parties=3).seal(vector(300, 1), party=0)
    total = hefl.KeylessSum(key.key_id, 300, max_parties=3)
    with pytest.raises(hefl.KeyMismatchError) as raised:
        total.add(foreign, 0)
    assert other_key.key_id in str(raised.value) and key.key_id in str(raised.value)
    assert total.count == 0


def test_sum_refuses_another_length(key: hefl.SecretKey, sealed: bytes) -> None:
    with pytest.raises(hefl.MessageError, match="of 301 values, expected 300"):
        hefl.KeylessSum(key.key_id, 299, max_parties=3).add(sealed, 0)


def test_sum_refuses_an_aggregate_as_a_submission(key: hefl.SecretKey, sealed: bytes) -> None:
    total = hefl.KeylessSum(key.key_id, 300, max_parties=3)
    total.add(sealed, 0)
    with pytest.raises(hefl.MessageError, match="seed is already in the sum"):
        total.add(sealed, 0)  # the same encryption twice
    total.add(seal3(key, party=1), 1)
    with pytest.raises(hefl.MessageError, match="sums 2 encryptions, expected between 1 and 1"):
        hefl.KeylessSum(key.key_id, 300, max_parties=3).add(total.to_bytes(), 0)


def test_sum_takes_an_update_only_as_what_its_header_names(key: hefl.SecretKey) -> None:
    """An upload names its run, round and party: handed in as another party's, or into
    another round or run, it is refused (a copied or replayed upload); as itself, taken."""
    run = hefl.run_fingerprint(key.key_id, 300, max_parties=3, max_examples=1, run="a")
    assert run != hefl.run_fingerprint(key.key_id, 300, max_parties=3, max_examples=1, run="b")
    envelope = hefl.Envelope(key, 300, max_parties=3)
    upload = envelope.seal(vector(300, 1), party=1, round=4, run=run)
    for round_, run_, party, names in [
        (4, run, 0, "party 1, round 4"),  # party 1's upload copied into party 0's reply
        (5, run, 1, "party 1, round 4"),  # replayed into the next round
        (4, None, 1, "party 1, round 4"),  # replayed into another run
    ]:
        total = hefl.KeylessSum(key.key_id, 300, max_parties=3, round=round_, run=run_)
        with pytest.raises(hefl.MessageError, match=f"a message for {names}, run {run[:12]}"):
            total.add(upload, party)
        assert total.count == 0
    total = hefl.KeylessSum(key.key_id, 300, max_parties=3, round=4, run=run)
    total.add(upload, 1)  # the negative control: the same bytes as what they are
    mean = envelope.open(total.to_bytes(), [1], round=4, run=run)
    assert np.allclose(mean, vector(300, 1), atol=2.0**-15)
    # The sum names its round and run too: opened as another round's, it is refused.
    with pytest.raises(hefl.MessageError, match="the sum of round 4"):
        envelope.open(total.to_bytes(), [1], round=5, run=run)
    with pytest.raises(ValueError, match="run must be 64 hex digits"):
        hefl.KeylessSum(key.key_id, 300, run="xyz")



def test_sum_stops_at_max_parties(key: hefl.SecretKey, sealed: bytes) -> None:
    envelope = hefl.Envelope(key, 300, max_parties=2)
    total = hefl.KeylessSum(key.key_id, 300, max_parties=2)
    total.add(envelope.seal(vector(300, 1), party=0), 0)
    total.add(envelope.seal(vector(300, 2), party=1), 1)
    with pytest.raises(hefl.SumFullError, match="already holds 2"):
        total.add(envelope.seal(vector(300, 3), party=2), 2)
    assert total.count == 2


def test_empty_sum_has_no_bytes(key: hefl.SecretKey) -> None:
    with pytest.raises(ValueError, match="the sum is empty"):
        hefl.KeylessSum(key.key_id, 3).to_bytes()


def test_sum_properties(key: hefl.SecretKey, sealed: bytes) -> None:
    total = hefl.KeylessSum(key.key_id, 300, max_parties=3)
    assert (total.key_id, total.length, total.count) == (key.key_id, 300, 0)
    assert len(sealed) <= total.max_message_len


def test_open_refuses_bad_aggregates(
    key: hefl.SecretKey, other_key: hefl.SecretKey, sealed: bytes
) -> None:
    envelope = hefl.Envelope(key, 300, max_parties=3)
    for parties in ([], [0, 1, 2, 3], [1, 0], [2, 2]):
        with pytest.raises(ValueError, match="expected 1 to 3 distinct parties in ascending"):
            envelope.open(sealed, parties)
    with pytest.raises(hefl.MessageError, match="an aggregate for party 0, round 0"):
        envelope.open(sealed, [0])  # an upload is not a sum
    with pytest.raises(hefl.MessageError, match="truncated"):
        envelope.open(sealed[:5], [0])
    with pytest.raises(hefl.KeyMismatchError):
        envelope.open(
            hefl.Envelope(other_key, 300, max_parties=3).seal(vector(300, 2), party=0), [0]
        )
    total = hefl.KeylessSum(key.key_id, 300, max_parties=3)
    total.add(sealed, 0)
    total.add(seal3(key, party=1), 1)
    with pytest.raises(hefl.MessageError, match="sums 2 encryptions"):
        envelope.open(total.to_bytes(), [0])


def test_open_refuses_a_sum_that_cannot_come_from_the_parties(key: hefl.SecretKey) -> None:
    envelope = hefl.Envelope(key, 4, max_parties=3)
    total = hefl.KeylessSum(key.key_id, 4, max_parties=3)
    for party in range(3):
        total.add(envelope.seal(np.ones(4, np.float32), party=party), party)
    assert np.array_equal(envelope.open(total.to_bytes(), [0, 1, 2]), np.ones(4, np.float32))
    # A server that claims fewer parties than summed is caught by the header check.
    with pytest.raises(hefl.MessageError):
        envelope.open(total.to_bytes(), [0, 1])


def test_random_corruption_never_crashes(key: hefl.SecretKey, sealed: bytes) -> None:
    rng = np.random.default_rng(0)
    total = hefl.KeylessSum(key.key_id, 300, max_parties=100)
    refused = 0
    for _ in range(300):
        message = bytearray(sealed)
        for _ in range(int(rng.integers(1, 4))):
            message[int(rng.integers(0, 64))] = int(rng.integers(0, 256))
        cut = int(rng.integers(0, len(message) + 1)) if rng.random() < 0.3 else len(message)
        try:
            total.add(bytes(message[:cut]), 0)
        except (hefl.MessageError, hefl.SumFullError):
            refused += 1
    assert refused > 0


# --- the GIL ----------------------------------------------------------------------------


def test_heavy_work_releases_the_gil(key: hefl.SecretKey) -> None:
    """While another thread seals a large vector, this thread keeps running Python."""
    n = 1 << 21
    envelope = hefl.Envelope(key, n)
    values = vector(n, 3)
    started = time.perf_counter()
    envelope.seal(values, party=0)
    one_seal = time.perf_counter() - started

    done = threading.Event()

    def work() -> None:
        for _ in range(3):
            envelope.seal(values, party=0)
        done.set()

    worker = threading.Thread(target=work)
    ticks = [time.perf_counter()]
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
    worker.join()
    longest_stall = max(b - a for a, b in zip(ticks, ticks[1:]))
    # Holding the GIL through a seal would stall this loop for a whole seal.
    assert longest_stall < one_seal / 2, (longest_stall, one_seal)


# --- documentation ----------------------------------------------------------------------


@pytest.mark.parametrize("module", [hefl, hefl.errors])
def test_module_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_stub_docstring_examples() -> None:
    stub = Path(hefl.__file__).with_name("_hefl.pyi").read_text()
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    test = parser.get_doctest(stub, {}, "_hefl.pyi", "_hefl.pyi", 0)
    runner.run(test)
    assert runner.tries >= 5 and runner.failures == 0


def test_stub_names_what_the_module_exports() -> None:
    stub = Path(hefl.__file__).with_name("_hefl.pyi").read_text()
    for name in dir(hefl._hefl):
        if not name.startswith("_"):
            assert name in stub, name
