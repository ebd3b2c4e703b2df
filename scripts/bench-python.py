"""The measuring half of scripts/bench-python (see there): run against a cluster named by
$NABU_CLUSTER, with the `nabu` binary at $NABU_BIN and scratch space in $BENCH_DIR."""

import os
import subprocess
import time
import tomllib

import boto3
import botocore.config
import numpy as np
import safetensors.numpy

import nabustore

GIB = 1 << 30
RUNS = int(os.environ.get("RUNS", "3"))
SIZE = int(float(os.environ.get("SIZE_GIB", "2")) * GIB)
CLUSTER = os.environ["NABU_CLUSTER"]
NABU = os.environ["NABU_BIN"]
WORK = os.environ["BENCH_DIR"]
KEY = "bench/model.safetensors"


def best_of(load):
    """The shortest of RUNS loads, in seconds (each checked to return the model)."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = load()
        times.append(time.perf_counter() - start)
        del result
    return min(times)


def make_model(path):
    """A SIZE-byte safetensors file of 16 float32/bfloat16 tensors of random bits."""
    rng = np.random.default_rng(0)
    tensors = {}
    per_tensor = SIZE // 16
    for i in range(16):
        tensors[f"layers.{i}.weight"] = np.frombuffer(rng.bytes(per_tensor), np.float32).reshape(-1, 1024)
    safetensors.numpy.save_file(tensors, path)
    return os.path.getsize(path)


def main():
    path = os.path.join(WORK, "model.safetensors")
    size = make_model(path)
    env = dict(os.environ, NABU_CLUSTER=CLUSTER)
    subprocess.run([NABU, "put", KEY, path], env=env, check=True, stdout=subprocess.DEVNULL)
    client = nabustore.Client(CLUSTER)
    reference = safetensors.numpy.load_file(path)
    loaded = client.load_safetensors(KEY)
    assert all(np.array_equal(loaded[k], v) for k, v in reference.items()), "loads differ"
    del loaded, reference

    def rust_get():
        with open(os.devnull, "wb") as sink:
            subprocess.run([NABU, "get", KEY], env=env, check=True, stdout=sink)

    cluster = tomllib.load(open(CLUSTER, "rb"))
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{cluster['node'][0]['s3_addr']}",
        aws_access_key_id=cluster["s3_access_key"],
        aws_secret_access_key=cluster["s3_secret_key"],
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    bucket, key = "default", KEY

    def boto3_load():
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return safetensors.numpy.load(body)

    open(path, "rb").read()  # the local file's pages in the cache
    rows = [
        ("Rust client: nabu get > /dev/null", best_of(rust_get)),
        ("nabustore: load_safetensors -> numpy", best_of(lambda: client.load_safetensors(KEY))),
        ("nabustore: get_into a numpy buffer", best_of(lambda: client.get_into(KEY, np.empty(size, np.uint8)))),
        ("safetensors.numpy.load_file (local file, cached)", best_of(lambda: safetensors.numpy.load_file(path))),
        ("boto3 via the S3 endpoint + safetensors.numpy.load", best_of(boto3_load)),
    ]
    rust = rows[0][1]
    print(f"\n{size / GIB:.2f} GiB safetensors file, best of {RUNS} runs each\n")
    print(f"{'':52} {'GiB/s':>7} {'vs Rust GET':>12}")
    for name, seconds in rows:
        print(f"{name:52} {size / GIB / seconds:7.2f} {rust / seconds:11.0%}")


if __name__ == "__main__":
    main()
