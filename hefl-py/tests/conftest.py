"""Fixtures every test module shares: a shared key and another federation's, on disk."""

from pathlib import Path

import pytest

import hefl


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh key file (mode 0600), one per test module."""
    path = tmp_path_factory.mktemp("keys") / "hefl.key"
    hefl.generate_key(path)
    return path


@pytest.fixture(scope="module")
def key(key_path: Path) -> hefl.SecretKey:
    """The secret key of :func:`key_path`."""
    return hefl.SecretKey.load(key_path)


@pytest.fixture(scope="module")
def other_key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another federation's key file."""
    path = tmp_path_factory.mktemp("other") / "hefl.key"
    hefl.generate_key(path)
    return path


@pytest.fixture(scope="module")
def other_key(other_key_path: Path) -> hefl.SecretKey:
    """The secret key of :func:`other_key_path`."""
    return hefl.SecretKey.load(other_key_path)
