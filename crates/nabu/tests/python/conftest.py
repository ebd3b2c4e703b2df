"""Fixtures for the S3 gateway tests.

The Rust test `s3_gateway_serves_real_clients` (crates/nabu/tests/cluster.rs) starts a real
six-node cluster with `nabu up` and runs pytest here with:

- NABU_S3_ENDPOINTS: every node's S3 endpoint, comma-separated (http://127.0.0.1:PORT);
- NABU_CLUSTER: the cluster.toml (access key and secret at its top level);
- NABU_BIN: the nabu binary (for `nabu key`);
- NABU_S3_STATE: a directory where the first phase records what it stored, so the second
  phase (`-m degraded`, run after two nodes are killed) can check every object.
"""

import hashlib
import json
import os
import pathlib
import tomllib
import uuid

import boto3
import botocore.config
import pytest


def _cluster():
    with open(os.environ["NABU_CLUSTER"], "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="session")
def endpoints():
    return os.environ["NABU_S3_ENDPOINTS"].split(",")


@pytest.fixture(scope="session")
def endpoint(endpoints):
    return endpoints[0]


@pytest.fixture(scope="session")
def credentials():
    cluster = _cluster()
    return cluster["s3_access_key"], cluster["s3_secret_key"]


def make_client(endpoint, access_key, secret_key, **config):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            **config,
        ),
    )


@pytest.fixture(scope="session")
def s3(endpoint, credentials):
    return make_client(endpoint, *credentials)


@pytest.fixture
def bucket(s3):
    """A fresh bucket, emptied and deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def state_dir():
    path = pathlib.Path(os.environ["NABU_S3_STATE"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_stored(state_dir, bucket, key, data):
    """Notes an object for the degraded phase."""
    entry = {"bucket": bucket, "key": key, "sha256": hashlib.sha256(data).hexdigest()}
    with open(state_dir / "stored.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def soak():
    return os.environ.get("NABU_SOAK") == "1"
