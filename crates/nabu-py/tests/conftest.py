"""Fixtures for the `nabustore` package's tests.

The Rust test `python_package_against_a_real_cluster` (crates/nabu/tests/cluster.rs, module
`python`) starts a real six-node cluster with `nabu up`, runs pytest here with the package
installed in the interpreter's venv (scripts/test builds it with maturin), kills two nodes
and runs the `degraded` tests. It sets:

- NABU_CLUSTER: the cluster.toml (the package's default, as for the `nabu` commands);
- NABU_PY_STATE: a directory where the first phase records what it stored, so the
  degraded phase can check it.
"""

import json
import os
import pathlib
import uuid

import pytest

import nabustore


@pytest.fixture(scope="session")
def cluster_file():
    return os.environ["NABU_CLUSTER"]


@pytest.fixture(scope="session")
def client(cluster_file):
    return nabustore.Client(cluster_file)


@pytest.fixture
def prefix():
    """A fresh key prefix per test."""
    return f"t-{uuid.uuid4().hex[:12]}/"


@pytest.fixture(scope="session")
def state_dir():
    path = pathlib.Path(os.environ["NABU_PY_STATE"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(state_dir, name, value):
    """Notes `value` under `name` for the degraded phase."""
    (state_dir / f"{name}.json").write_text(json.dumps(value))


def recorded(state_dir, name):
    return json.loads((state_dir / f"{name}.json").read_text())
