"""Reads with two of the six nodes killed: the first phase stores objects (single-part,
multipart, small), the Rust harness kills two nodes, and the second phase (`-m degraded`)
GETs every one of them from every live node's endpoint."""

import hashlib
import json
import os

import pytest

from conftest import make_client, record_stored

MIB = 1 << 20
BUCKET = "survivors"


def test_store_objects_for_degraded_reads(s3, state_dir):
    s3.create_bucket(Bucket=BUCKET)
    objects = {
        "small.json": os.urandom(700),
        "medium.bin": os.urandom(9 * MIB + 1),
        "exact-stripe.bin": os.urandom(4 * MIB),
    }
    for key, data in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        record_stored(state_dir, BUCKET, key, data)
    parts = [os.urandom(8 * MIB), os.urandom(8 * MIB), os.urandom(1000)]
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="multipart.bin")["UploadId"]
    etags = [
        s3.upload_part(Bucket=BUCKET, Key="multipart.bin", UploadId=upload_id,
                       PartNumber=n + 1, Body=body)["ETag"]
        for n, body in enumerate(parts)
    ]
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="multipart.bin", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]},
    )
    record_stored(state_dir, BUCKET, "multipart.bin", b"".join(parts))


@pytest.mark.degraded
def test_every_get_succeeds_with_two_nodes_down(endpoints, credentials, state_dir):
    stored = [json.loads(line) for line in (state_dir / "stored.jsonl").read_text().splitlines()]
    assert len(stored) >= 4, "the first phase stored nothing to read"
    for endpoint in endpoints:
        s3 = make_client(endpoint, *credentials)
        listed = s3.list_objects_v2(Bucket=BUCKET)
        assert sorted(o["Key"] for o in listed["Contents"]) == sorted(
            e["key"] for e in stored if e["bucket"] == BUCKET
        )
        for entry in stored:
            got = s3.get_object(Bucket=entry["bucket"], Key=entry["key"])["Body"].read()
            assert hashlib.sha256(got).hexdigest() == entry["sha256"], (endpoint, entry["key"])
            head = s3.head_object(Bucket=entry["bucket"], Key=entry["key"])
            assert head["ContentLength"] == len(got)
            if len(got) > 10:
                ranged = s3.get_object(Bucket=entry["bucket"], Key=entry["key"], Range="bytes=3-9")
                assert ranged["Body"].read() == got[3:10]
