"""The measuring half of scripts/bench-python (see there): run against a cluster named by
$NABU_CLUSTER, with the `nabu` binary at $NABU_BIN and scratch space in $BENCH_DIR."""

import json
import os
import statistics
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


def median_of(loads):
    """The median of RUNS runs of each load, in seconds. The loads take turns (round after
    round), so a burst of load from elsewhere on the machine hits them alike."""
    times = {name: [] for name in loads}
    for _ in range(RUNS):
        for name, load in loads.items():
            start = time.perf_counter()
            result = load()
            times[name].append(time.perf_counter() - start)
            del result
    return [(name, statistics.median(runs)) for name, runs in times.items()]


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
    # Bitwise (random bits include NaNs, which compare unequal as floats).
    assert all(np.array_equal(loaded[k].view(np.uint8), v.view(np.uint8)) for k, v in reference.items()), "loads differ"
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
    reused = nabustore.empty_bytes(size)
    reused.fill(0)
    rows = median_of(
        {
            "Rust client: nabu get > /dev/null": rust_get,
            "nabustore: load_safetensors -> numpy": lambda: client.load_safetensors(KEY),
            "nabustore: get_into a fresh buffer": lambda: client.get_into(KEY, nabustore.empty_bytes(size)),
            "nabustore: get_into a reused buffer": lambda: client.get_into(KEY, reused),
            "safetensors.numpy.load_file (local file, cached)": lambda: safetensors.numpy.load_file(path),
            "boto3 via the S3 endpoint + safetensors.numpy.load": boto3_load,
        }
    )
    # The Rust client's GET into memory, as `nabu bench` measures it (its own object of the
    # same size; the median GET latency).
    report = subprocess.run(
        [NABU, "bench", "--sizes", f"{os.environ.get('SIZE_GIB', '2')}GiB", "--concurrency", "1",
         "--ops", str(RUNS), "--duration", "600s", "--json"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    get = next(p for p in json.loads(report)["passes"] if p["op"] == "get")
    rows.insert(0, ("Rust client: nabu bench GET (into memory)", get["latency"]["p50_us"] / 1e6))
    in_memory, streamed = rows[0][1], rows[1][1]
    print(f"\n{size / GIB:.2f} GiB safetensors file, median of {RUNS} runs each\n")
    print(f"{'':52} {'GiB/s':>7} {'vs GET':>7} {'vs stream':>10}")
    for name, seconds in rows:
        print(f"{name:52} {size / GIB / seconds:7.2f} {in_memory / seconds:7.0%} {streamed / seconds:10.0%}")


if __name__ == "__main__":
    main()
