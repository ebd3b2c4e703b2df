"""The driver of scripts/bench-s3: runs the passes and prints the report (see that script)."""

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request

import boto3
import botocore.config

MIB = 1 << 20
RANGE_BYTES = 8 * MIB
RANGE_CONCURRENCY = 16
BOTO_CONCURRENCY = 8


def client(endpoint, key, secret):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            max_pool_connections=32,
            retries={"max_attempts": 2},
        ),
    )


def timed(action):
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def best(runs, action):
    return min(timed(action) for _ in range(runs))


def s5cmd(args, endpoint, key, secret, *command):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_REGION="us-east-1")
    subprocess.run(
        [args.s5cmd, "--endpoint-url", endpoint, "--log", "error", *command],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )


def make_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 * MIB))
            f.write(chunk)
            left -= len(chunk)


def ranged_get_boto3(s3, bucket, key, size):
    ranges = [(at, min(at + RANGE_BYTES, size) - 1) for at in range(0, size, RANGE_BYTES)]

    def fetch(span):
        body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={span[0]}-{span[1]}")["Body"]
        got = 0
        for chunk in iter(lambda: body.read(1 * MIB), b""):
            got += len(chunk)
        assert got == span[1] - span[0] + 1
        return got

    with concurrent.futures.ThreadPoolExecutor(RANGE_CONCURRENCY) as pool:
        assert sum(pool.map(fetch, ranges)) == size


def ranged_pass(args, nabu_endpoint, key, secret):
    """Ranged GET through S3 against the native client's GET of the same object."""
    size = int(args.ranged_gib * (1 << 30))
    bucket = "bench-ranged"
    s3 = client(nabu_endpoint, key, secret)
    s3.create_bucket(Bucket=bucket)
    source = os.path.join(args.work, "ranged.bin")
    make_file(source, size)
    s5cmd(args, nabu_endpoint, key, secret, "cp", "--concurrency", "8", "--part-size", "64",
          source, f"s3://{bucket}/big.bin")
    os.remove(source)
    out = os.path.join(args.work, "ranged.out")
    native = best(2, lambda: subprocess.run(
        [args.nabu, "get", "--cluster", args.cluster, "--ns", bucket, "big.bin", "-o", out],
        check=True))
    os.remove(out)
    via_s5cmd = best(2, lambda: s5cmd(
        args, nabu_endpoint, key, secret, "cp", "--concurrency", str(RANGE_CONCURRENCY),
        "--part-size", str(RANGE_BYTES // MIB), f"s3://{bucket}/big.bin", out))
    os.remove(out)
    via_boto3 = best(2, lambda: ranged_get_boto3(s3, bucket, "big.bin", size))
    s3.delete_object(Bucket=bucket, Key="big.bin")
    s3.delete_bucket(Bucket=bucket)
    rate = lambda seconds: size / seconds / 1e6  # noqa: E731
    return [
        ("native `nabu get` (baseline)", rate(native), 1.0),
        ("S3 ranged GET, s5cmd 8 MiB x16", rate(via_s5cmd), native / via_s5cmd),
        ("S3 ranged GET, boto3 8 MiB x16", rate(via_boto3), native / via_boto3),
    ]


def object_pass(args, endpoint, key, secret, tag, size, count):
    """PUT then GET `count` objects of `size` with s5cmd and with boto3; MB/s each."""
    s3 = client(endpoint, key, secret)
    bucket = f"bench-{tag}-{size // MIB}m"
    s3.create_bucket(Bucket=bucket)
    local = os.path.join(args.work, f"objects-{tag}")
    os.makedirs(local, exist_ok=True)
    for i in range(count):
        make_file(os.path.join(local, f"o{i:04d}"), size)
    total = size * count
    results = {}
    results["s5cmd PUT"] = total / timed(lambda: s5cmd(
        args, endpoint, key, secret, "--numworkers", "16", "cp", f"{local}/*",
        f"s3://{bucket}/s5/")) / 1e6
    down = os.path.join(args.work, f"down-{tag}")
    results["s5cmd GET"] = total / timed(lambda: s5cmd(
        args, endpoint, key, secret, "--numworkers", "16", "cp", f"s3://{bucket}/s5/*",
        f"{down}/")) / 1e6
    shutil.rmtree(down)
    payloads = [open(os.path.join(local, f"o{i:04d}"), "rb").read() for i in range(count)]

    def put(i):
        s3.put_object(Bucket=bucket, Key=f"b3/o{i:04d}", Body=payloads[i])

    def get(i):
        assert len(s3.get_object(Bucket=bucket, Key=f"b3/o{i:04d}")["Body"].read()) == size

    with concurrent.futures.ThreadPoolExecutor(BOTO_CONCURRENCY) as pool:
        results["boto3 PUT"] = total / timed(lambda: list(pool.map(put, range(count)))) / 1e6
        results["boto3 GET"] = total / timed(lambda: list(pool.map(get, range(count)))) / 1e6
    shutil.rmtree(local)
    del payloads
    for prefix in ["s5/", "b3/"]:
        keys = [{"Key": f"{prefix}o{i:04d}"} for i in range(count)]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=bucket)
    return results


def durable_write_limit(directory, total=256 * MIB):
    """The data dir's durable-write rate: 1 MiB writes, each followed by fdatasync, one at a
    time (as `nabu bench` measures it, through the page cache here). MB/s."""
    path = os.path.join(directory, "durable-write.probe")
    block = os.urandom(MIB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        started = time.perf_counter()
        for _ in range(total // MIB):
            os.write(fd, block)
            os.fdatasync(fd)
        seconds = time.perf_counter() - started
    finally:
        os.close(fd)
        os.remove(path)
    return total / seconds / 1e6


def wait_for(endpoint, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers (403 without a signature)
        except OSError:
            time.sleep(0.5)
    sys.exit(f"{endpoint} did not come up")


def main():
    parser = argparse.ArgumentParser()
    for flag in ["--nabu", "--cluster", "--weed-endpoint", "--weed-key", "--weed-secret",
                 "--s5cmd", "--work"]:
        parser.add_argument(flag, required=True)
    parser.add_argument("--ranged-gib", type=float, default=2.0)
    args = parser.parse_args()
    with open(args.cluster, "rb") as f:
        cluster = tomllib.load(f)
    nabu_endpoint = f"http://{cluster['node'][0]['s3_addr']}"
    nabu_key, nabu_secret = cluster["s3_access_key"], cluster["s3_secret_key"]
    wait_for(args.weed_endpoint)

    print(f"\nRanged GET of a {args.ranged_gib:g} GiB object (ec:4+2, 6 nodes), best of 2")
    print(f"{'pass':<36} {'MB/s':>8} {'vs native':>10}")
    for name, mbps, ratio in ranged_pass(args, nabu_endpoint, nabu_key, nabu_secret):
        print(f"{name:<36} {mbps:>8.0f} {ratio:>9.2f}x")

    limit = durable_write_limit(args.work)
    print(f"\nDurable-write limit of {args.work}: {limit:.0f} MB/s (1 MiB writes + fdatasync)")
    print("\nPUT/GET through S3: NabuStore (fdatasync before ack) vs SeaweedFS (no fsync)")
    print(f"{'objects':<16} {'client op':<11} {'NabuStore':>10} {'SeaweedFS':>10} {'ratio':>7}"
          f" {'PUT x1.5 / durable limit':>26}")
    for size, count in [(1 * MIB, 256), (64 * MIB, 8)]:
        nabu = object_pass(args, nabu_endpoint, nabu_key, nabu_secret, "nabu", size, count)
        weed = object_pass(args, args.weed_endpoint, args.weed_key, args.weed_secret, "weed",
                           size, count)
        for op in nabu:
            label = f"{count} x {size // MIB} MiB"
            durable = f"{nabu[op] * 1.5 / limit:>25.0%}" if "PUT" in op else ""
            print(f"{label:<16} {op:<11} {nabu[op]:>10.0f} {weed[op]:>10.0f} "
                  f"{nabu[op] / weed[op]:>6.2f}x {durable}")
    print("\nMB/s = 10^6 bytes per second of object data. PUT ratios compare a durable write "
          "(every shard fdatasync'd, x1.5 bytes for ec:4+2) with one SeaweedFS does not sync.")


if __name__ == "__main__":
    main()
