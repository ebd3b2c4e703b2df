"""The S3 gateway against the AWS CLI, and access keys managed with `nabu key`."""

import json
import os
import pathlib
import subprocess
import uuid

import pytest

from conftest import make_client

MIB = 1 << 20


@pytest.fixture
def aws(tmp_path, endpoint, credentials):
    config = tmp_path / "aws-config"
    # 64 MiB parts, as the issue asks; multipart starts above 64 MiB.
    config.write_text(
        "[default]\nregion = us-east-1\n"
        "s3 =\n  multipart_threshold = 64MB\n  multipart_chunksize = 64MB\n"
        "  addressing_style = path\n"
    )
    env = dict(
        os.environ,
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_ACCESS_KEY_ID=credentials[0],
        AWS_SECRET_ACCESS_KEY=credentials[1],
        AWS_EC2_METADATA_DISABLED="true",
    )
    cli = pathlib.Path(os.environ["NABU_S3_PYTHON"]).with_name("aws")

    def run(*args, check=True):
        result = subprocess.run(
            [str(cli), "--endpoint-url", endpoint, *args],
            env=env, capture_output=True, text=True,
        )
        if check:
            assert result.returncode == 0, f"aws {args}: {result.stderr}"
        return result

    return run


def test_cli_bucket_lifecycle_copy_list_and_ranges(aws, tmp_path):
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    aws("s3", "mb", f"s3://{bucket}")
    assert bucket in aws("s3", "ls").stdout

    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(3 * MIB))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(140 * MIB))  # three 64 MiB parts, the last short
    aws("s3", "cp", str(small), f"s3://{bucket}/data/small.bin")
    aws("s3", "cp", str(big), f"s3://{bucket}/data/big.bin")

    listing = aws("s3", "ls", f"s3://{bucket}/data/").stdout
    assert "small.bin" in listing and "big.bin" in listing
    assert aws("s3", "ls", f"s3://{bucket}/").stdout.split() == ["PRE", "data/"]

    for name, source in [("small.bin", small), ("big.bin", big)]:
        back = tmp_path / f"{name}.back"
        aws("s3", "cp", f"s3://{bucket}/data/{name}", str(back))
        assert back.read_bytes() == source.read_bytes()

    ranged = tmp_path / "range.out"
    head = json.loads(
        aws("s3api", "get-object", "--bucket", bucket, "--key", "data/big.bin",
            "--range", "bytes=67108860-67108869", str(ranged)).stdout
    )
    assert head["ContentRange"] == f"bytes 67108860-67108869/{140 * MIB}"
    assert ranged.read_bytes() == big.read_bytes()[67108860:67108870]

    meta = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "data/big.bin").stdout)
    assert meta["ContentLength"] == 140 * MIB

    aws("s3", "cp", f"s3://{bucket}/data/small.bin", f"s3://{bucket}/copied/small.bin")
    aws("s3", "mv", f"s3://{bucket}/copied/small.bin", f"s3://{bucket}/moved/small.bin")
    keys = aws("s3", "ls", "--recursive", f"s3://{bucket}/").stdout
    assert "moved/small.bin" in keys and "copied/small.bin" not in keys

    failed = aws("s3", "rb", f"s3://{bucket}", check=False)
    assert failed.returncode != 0 and "BucketNotEmpty" in failed.stderr
    aws("s3", "rm", "--recursive", f"s3://{bucket}/")
    aws("s3", "rb", f"s3://{bucket}")
    assert bucket not in aws("s3", "ls").stdout


def test_nabu_key_create_list_delete(endpoints, s3):
    endpoint = endpoints[0]
    nabu = os.environ["NABU_BIN"]
    cluster = os.environ["NABU_CLUSTER"]

    def run(*args):
        result = subprocess.run(
            [nabu, "key", *args, "--cluster", cluster], capture_output=True, text=True
        )
        return result

    created = run("create")
    assert created.returncode == 0, created.stderr
    values = dict(line.split("=", 1) for line in created.stdout.split())
    key_id, secret = values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]
    assert key_id in run("list").stdout
    assert secret not in run("list").stdout

    # Many keys are live at once: the new key and the dev key both work.
    client = make_client(endpoint, key_id, secret)
    client.list_buckets()
    s3.list_buckets()

    deleted = run("delete", key_id)
    assert deleted.returncode == 0, deleted.stderr
    assert key_id not in run("list").stdout
    again = run("delete", key_id)
    assert again.returncode != 0 and "no access key" in again.stderr
    # A node that has not cached the key (gateways cache secrets for a few seconds) refuses
    # it at once.
    other = make_client(endpoints[-1], key_id, secret)
    with pytest.raises(Exception) as excinfo:
        other.list_buckets()
    assert "InvalidAccessKeyId" in str(excinfo.value)
