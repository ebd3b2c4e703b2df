"""The S3 gateway against boto3: buckets, objects, ranges, listing, copy, delete,
multipart, checksums, auth errors and presigned URLs."""

import base64
import concurrent.futures
import hashlib
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib

import blake3
import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import error_code, make_client, soak

MIB = 1 << 20


def test_bucket_lifecycle(s3):
    name = f"life-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.head_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.create_bucket(Bucket=name)
    assert error_code(excinfo) == "BucketAlreadyOwnedByYou"

    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.delete_bucket(Bucket=name)
    assert error_code(excinfo) == "BucketNotEmpty"
    # Regression: a deleted key sorting first made a one-key listing page come back empty
    # (tombstones count against each node's page), and a bucket that still held "k" was
    # deleted. The emptiness check follows the listing's continuation.
    s3.put_object(Bucket=name, Key="a-deleted-first", Body=b"x")
    s3.delete_object(Bucket=name, Key="a-deleted-first")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.delete_bucket(Bucket=name)
    assert error_code(excinfo) == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)

    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.head_bucket(Bucket=name)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.delete_bucket(Bucket=name)
    assert error_code(excinfo) == "NoSuchBucket"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert error_code(excinfo) == "NoSuchBucket"


def test_put_get_head_with_metadata(s3, bucket):
    data = os.urandom(3 * MIB + 17)
    put = s3.put_object(
        Bucket=bucket,
        Key="weights/model.bin",
        Body=data,
        ContentType="application/octet-stream",
        Metadata={"run": "42", "Stage": "final"},
    )
    head = s3.head_object(Bucket=bucket, Key="weights/model.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == put["ETag"]
    assert head["ContentType"] == "application/octet-stream"
    assert head["Metadata"] == {"run": "42", "stage": "final"}
    got = s3.get_object(Bucket=bucket, Key="weights/model.bin")
    assert got["Body"].read() == data
    assert got["ETag"] == put["ETag"]
    assert got["LastModified"] == head["LastModified"]

    # Same bytes, same ETag; other bytes, another.
    again = s3.put_object(Bucket=bucket, Key="copy-of-bytes", Body=data)
    assert again["ETag"] == put["ETag"]
    other = s3.put_object(Bucket=bucket, Key="weights/model.bin", Body=b"new")
    assert other["ETag"] != put["ETag"]
    assert s3.get_object(Bucket=bucket, Key="weights/model.bin")["Body"].read() == b"new"

    empty = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    assert s3.head_object(Bucket=bucket, Key="empty")["ETag"] == empty["ETag"]

    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="missing")
    assert error_code(excinfo) == "NoSuchKey"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="missing")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_ranged_get(s3, bucket):
    data = os.urandom(10 * MIB + 5)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    cases = [
        ("bytes=0-7", 0, 8),
        ("bytes=100-199", 100, 200),
        # Across the 4 MiB stripe boundary, and over three stripes.
        (f"bytes={4 * MIB - 10}-{4 * MIB + 9}", 4 * MIB - 10, 4 * MIB + 10),
        (f"bytes={3 * MIB}-{9 * MIB}", 3 * MIB, 9 * MIB + 1),
        (f"bytes={10 * MIB}-", 10 * MIB, len(data)),
        ("bytes=-5", len(data) - 5, len(data)),
        (f"bytes=5-{len(data) + 100}", 5, len(data)),
    ]
    for header, start, end in cases:
        got = s3.get_object(Bucket=bucket, Key="r", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, header
        assert got["ContentRange"] == f"bytes {start}-{end - 1}/{len(data)}", header
        assert got["ContentLength"] == end - start, header
        assert got["Body"].read() == data[start:end], header
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(data)}-")
    assert error_code(excinfo) == "InvalidRange"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_list_prefix_delimiter_pagination_and_url_encoding(s3, bucket):
    keys = [f"ckpt/step-{i:03d}/shard-{j}.pt" for i in range(5) for j in range(3)]
    keys += [f"models/m{i}.safetensors" for i in range(12)]
    keys += ["top.txt", "odd key/ü+1.bin"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    everything = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in everything["Contents"]] == sorted(keys)
    assert everything["KeyCount"] == len(keys)
    assert not everything["IsTruncated"]
    sizes = {o["Key"]: o["Size"] for o in everything["Contents"]}
    assert all(sizes[k] == len(k.encode()) for k in keys)

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["ckpt/", "models/", "odd key/"]
    assert [o["Key"] for o in top["Contents"]] == ["top.txt"]

    steps = s3.list_objects_v2(Bucket=bucket, Prefix="ckpt/", Delimiter="/")
    assert [p["Prefix"] for p in steps["CommonPrefixes"]] == [
        f"ckpt/step-{i:03d}/" for i in range(5)
    ]
    assert "Contents" not in steps or steps["Contents"] == []

    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="models/", PaginationConfig={"PageSize": 5}
        )
    )
    assert [p["KeyCount"] for p in pages] == [5, 5, 2]
    assert [p["IsTruncated"] for p in pages] == [True, True, False]
    listed = [o["Key"] for p in pages for o in p["Contents"]]
    assert listed == sorted(k for k in keys if k.startswith("models/"))

    # Pagination over common prefixes too.
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="ckpt/", Delimiter="/", PaginationConfig={"PageSize": 2}
        )
    )
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    assert prefixes == [f"ckpt/step-{i:03d}/" for i in range(5)]

    after = s3.list_objects_v2(Bucket=bucket, Prefix="models/", StartAfter="models/m5.safetensors")
    assert [o["Key"] for o in after["Contents"]] == sorted(
        k for k in keys if k.startswith("models/") and k > "models/m5.safetensors"
    )

    # Asked for explicitly, encoding-type=url reaches the caller undecoded.
    raw = s3.list_objects_v2(Bucket=bucket, Prefix="odd", EncodingType="url")
    assert [o["Key"] for o in raw["Contents"]] == ["odd%20key/%C3%BC%2B1.bin"]
    assert urllib.parse.unquote(raw["Contents"][0]["Key"]) == "odd key/ü+1.bin"

    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="not-hex")
    assert error_code(excinfo) == "InvalidArgument"


def test_copy_within_and_across_buckets(s3, bucket):
    data = os.urandom(9 * MIB)
    put = s3.put_object(Bucket=bucket, Key="src", Body=data, Metadata={"a": "1"})
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["ETag"] == put["ETag"]
    assert head["Metadata"] == {"a": "1"}
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == data

    s3.copy_object(
        Bucket=bucket,
        Key="dst2",
        CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        ContentType="text/plain",
    )
    head = s3.head_object(Bucket=bucket, Key="dst2")
    assert head["Metadata"] == {"b": "2"}
    assert head["ContentType"] == "text/plain"

    other = f"copy-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    try:
        s3.copy_object(Bucket=other, Key="x", CopySource={"Bucket": bucket, "Key": "src"})
        assert s3.get_object(Bucket=other, Key="x")["Body"].read() == data
    finally:
        s3.delete_object(Bucket=other, Key="x")
        s3.delete_bucket(Bucket=other)

    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="y", CopySource={"Bucket": bucket, "Key": "nope"})
    assert error_code(excinfo) == "NoSuchKey"


def test_delete_and_multi_delete(s3, bucket):
    for i in range(10):
        s3.put_object(Bucket=bucket, Key=f"d/{i}", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="d/0")
    s3.delete_object(Bucket=bucket, Key="d/0")  # deleting twice is fine, as in S3
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="d/0")
    result = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": f"d/{i}"} for i in range(1, 10)] + [{"Key": "never"}]},
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted(
        [f"d/{i}" for i in range(1, 10)] + ["never"]
    )
    assert result.get("Errors", []) == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_multipart_visible_only_at_complete(s3, bucket, state_dir):
    part_bytes = 64 * MIB
    parts = 16 if soak() else 4  # 1 GiB with NABU_SOAK=1, else 256 MiB
    upload = s3.create_multipart_upload(
        Bucket=bucket, Key="ckpt/model.bin", Metadata={"step": "9"}
    )
    upload_id = upload["UploadId"]
    digest = blake3.blake3()
    etags = []
    for number in range(1, parts + 1):
        body = os.urandom(part_bytes)
        digest.update(body)
        etags.append(
            s3.upload_part(
                Bucket=bucket, Key="ckpt/model.bin", UploadId=upload_id,
                PartNumber=number, Body=body,
            )["ETag"]
        )
    # Regression: a short last part used to be stored as a small object (whole copies), and
    # Complete, composing it into an ec:4+2 object, was refused (CONFLICT) by the nodes that
    # held its stripe in the other layout. Parts now keep the bucket's layout.
    tail = os.urandom(123_457)
    digest.update(tail)
    etags.append(
        s3.upload_part(
            Bucket=bucket, Key="ckpt/model.bin", UploadId=upload_id,
            PartNumber=parts + 1, Body=tail,
        )["ETag"]
    )
    listed = s3.list_parts(Bucket=bucket, Key="ckpt/model.bin", UploadId=upload_id)
    assert [p["PartNumber"] for p in listed["Parts"]] == list(range(1, parts + 2))
    assert [p["ETag"] for p in listed["Parts"]] == etags
    assert [p["Size"] for p in listed["Parts"]] == [part_bytes] * parts + [len(tail)]

    # Not visible before Complete: neither to HEAD nor to a listing.
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="ckpt/model.bin")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0

    s3.complete_multipart_upload(
        Bucket=bucket, Key="ckpt/model.bin", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )
    head = s3.head_object(Bucket=bucket, Key="ckpt/model.bin")
    assert head["ContentLength"] == parts * part_bytes + len(tail)
    assert head["Metadata"] == {"step": "9"}
    body = s3.get_object(Bucket=bucket, Key="ckpt/model.bin")["Body"]
    got = blake3.blake3()
    for chunk in iter(lambda: body.read(8 * MIB), b""):
        got.update(chunk)
    assert got.hexdigest() == digest.hexdigest()
    # The composed blob's id (merged from the parts' stripe hashes, not from re-reading
    # them) is the BLAKE3 of the whole, as for any put: the ETag shows its first 16 bytes.
    assert head["ETag"] == f'"{digest.hexdigest()[:32]}"'

    # A range across the boundary of parts 1 and 2.
    ranged = s3.get_object(
        Bucket=bucket, Key="ckpt/model.bin", Range=f"bytes={part_bytes - 3}-{part_bytes + 2}"
    )
    assert len(ranged["Body"].read()) == 6
    # The upload is gone; its parts do not show in listings.
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.list_parts(Bucket=bucket, Key="ckpt/model.bin", UploadId=upload_id)
    assert error_code(excinfo) == "NoSuchUpload"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["ckpt/model.bin"]


def test_multipart_errors_and_abort(s3, bucket):
    key = "m"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    small = [
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=b"x" * MIB)
        for n in (1, 2)
    ]
    complete = lambda parts: s3.complete_multipart_upload(  # noqa: E731
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        complete([{"PartNumber": 1, "ETag": small[0]["ETag"]}, {"PartNumber": 2, "ETag": small[1]["ETag"]}])
    assert error_code(excinfo) == "EntityTooSmall"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        complete([{"PartNumber": 2, "ETag": small[1]["ETag"]}, {"PartNumber": 1, "ETag": small[0]["ETag"]}])
    assert error_code(excinfo) == "InvalidPartOrder"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        complete([{"PartNumber": 3, "ETag": small[0]["ETag"]}])
    assert error_code(excinfo) == "InvalidPart"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        complete([{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}])
    assert error_code(excinfo) == "InvalidPart"

    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    assert error_code(excinfo) == "NoSuchUpload"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x")
    assert error_code(excinfo) == "NoSuchUpload"
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key=key)


def test_upload_part_copy(s3, bucket):
    source = os.urandom(12 * MIB)
    s3.put_object(Bucket=bucket, Key="source", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="joined")["UploadId"]
    first = s3.upload_part_copy(
        Bucket=bucket, Key="joined", UploadId=upload_id, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "source"},
    )
    second = s3.upload_part_copy(
        Bucket=bucket, Key="joined", UploadId=upload_id, PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "source"}, CopySourceRange="bytes=1000-1999",
    )
    s3.complete_multipart_upload(
        Bucket=bucket, Key="joined", UploadId=upload_id,
        MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": first["CopyPartResult"]["ETag"]},
            {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]},
        ]},
    )
    got = s3.get_object(Bucket=bucket, Key="joined")["Body"].read()
    assert got == source + source[1000:2000]
    head = s3.head_object(Bucket=bucket, Key="joined")
    assert head["ETag"] == f'"{blake3.blake3(got).hexdigest()[:32]}"'


def test_multipart_with_uneven_parts(s3, bucket):
    # Parts that are not whole stripes (s3fs uses 50 MiB) are copied into a new blob.
    parts = [os.urandom(5 * MIB + 11), os.urandom(6 * MIB), os.urandom(7)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="uneven")["UploadId"]
    etags = [
        s3.upload_part(Bucket=bucket, Key="uneven", UploadId=upload_id, PartNumber=n + 1,
                       Body=body)["ETag"]
        for n, body in enumerate(parts)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="uneven", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]},
    )
    whole = b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="uneven")["Body"].read() == whole
    assert s3.head_object(Bucket=bucket, Key="uneven")["ETag"] == f'"{blake3.blake3(whole).hexdigest()[:32]}"'


def test_multipart_parts_out_of_order_and_replaced(s3, bucket):
    # Parts uploaded in reverse, one re-uploaded with other bytes: the last upload of each
    # number counts, in number order.
    parts = {n: os.urandom(8 * MIB) for n in (1, 2, 3)}
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="shuffled")["UploadId"]
    for n in (3, 2, 1):
        s3.upload_part(Bucket=bucket, Key="shuffled", UploadId=upload_id, PartNumber=n, Body=os.urandom(8 * MIB))
    etags = {
        n: s3.upload_part(Bucket=bucket, Key="shuffled", UploadId=upload_id, PartNumber=n,
                          Body=parts[n])["ETag"]
        for n in (2, 1, 3)
    }
    s3.complete_multipart_upload(
        Bucket=bucket, Key="shuffled", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)]},
    )
    whole = parts[1] + parts[2] + parts[3]
    assert s3.get_object(Bucket=bucket, Key="shuffled")["Body"].read() == whole
    assert s3.head_object(Bucket=bucket, Key="shuffled")["ETag"] == f'"{blake3.blake3(whole).hexdigest()[:32]}"'



def test_checksums_are_verified(s3, bucket):
    data = os.urandom(5 * MIB + 3)
    # boto3 computes and sends CRC32 (header or aws-chunked trailer); the gateway checks it.
    put = s3.put_object(Bucket=bucket, Key="crc", Body=data, ChecksumAlgorithm="CRC32")
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert put["ChecksumCRC32"] == crc
    assert s3.get_object(Bucket=bucket, Key="crc")["Body"].read() == data
    # (CRC32C and CRC64NVME need botocore[crt], which is not installed.)
    for algorithm in ["SHA256", "SHA1"]:
        s3.put_object(Bucket=bucket, Key=f"sum-{algorithm}", Body=data, ChecksumAlgorithm=algorithm)

    # With x-amz-checksum-mode: ENABLED, GET and HEAD return the checksum the object was
    # uploaded with (boto3 then checks the body against it); a range gets none, as from S3;
    # a copy keeps it (same bytes).
    got = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == crc
    assert got["Body"].read() == data
    head = s3.head_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc
    ranged = s3.get_object(Bucket=bucket, Key="crc", Range="bytes=0-9", ChecksumMode="ENABLED")
    assert "ChecksumCRC32" not in ranged and ranged["Body"].read() == data[:10]
    sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    head = s3.head_object(Bucket=bucket, Key="sum-SHA256", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256
    s3.copy_object(Bucket=bucket, Key="crc-copy", CopySource={"Bucket": bucket, "Key": "crc"},
                   MetadataDirective="REPLACE", Metadata={"copied": "yes"})
    head = s3.head_object(Bucket=bucket, Key="crc-copy", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc and head["Metadata"] == {"copied": "yes"}

    # A wrong checksum: refused, and nothing becomes visible.
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="bad", Body=data, ChecksumCRC32="AAAAAA==")
    assert error_code(excinfo) == "BadDigest"
    bad_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="bad", Body=data, ContentMD5=bad_md5)
    assert error_code(excinfo) == "BadDigest"
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="bad")
    good_md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    s3.put_object(Bucket=bucket, Key="good", Body=data, ContentMD5=good_md5)


def test_wrong_secret_and_unknown_key(endpoint, credentials, bucket):
    access_key, secret = credentials
    wrong = make_client(endpoint, access_key, secret[:-1] + ("0" if secret[-1] != "0" else "1"))
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        wrong.list_objects_v2(Bucket=bucket)
    assert error_code(excinfo) == "SignatureDoesNotMatch"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = make_client(endpoint, "NABUNOSUCHKEY0000000", secret)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        unknown.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert error_code(excinfo) == "InvalidAccessKeyId"
    # Anonymous requests are refused too.
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(f"{endpoint}/{bucket}")
    assert http_error.value.code == 403


def test_presigned_get(s3, bucket):
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="shared/file.bin", Body=data)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/file.bin"}, ExpiresIn=300
    )
    with urllib.request.urlopen(url) as response:
        assert response.read() == data
    tampered = url.replace("shared/file.bin", "shared/other.bin")
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(tampered)
    assert http_error.value.code == 403
    assert b"SignatureDoesNotMatch" in http_error.value.read()


def test_absolute_form_request_target(s3, bucket):
    # The Run:ai streamer's CRT client sends `GET http://host:port/bucket/key HTTP/1.1`.
    data = os.urandom(5000)
    s3.put_object(Bucket=bucket, Key="abs/key.bin", Body=data)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "abs/key.bin"}, ExpiresIn=300
    )
    parsed = urllib.parse.urlsplit(url)
    with socket.create_connection((parsed.hostname, parsed.port)) as conn:
        conn.sendall(
            f"GET {url} HTTP/1.1\r\nHost: {parsed.netloc}\r\nConnection: close\r\n\r\n".encode()
        )
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == data


def test_entity_too_large_is_refused_before_the_body(s3, bucket):
    # A declared 6 GiB body is refused from its headers: no byte of it needs to arrive.
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "huge"}, ExpiresIn=300
    )
    parsed = urllib.parse.urlsplit(url)
    target = f"{parsed.path}?{parsed.query}"
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as conn:
        conn.sendall(
            f"PUT {target} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
            f"Content-Length: {6 << 30}\r\n\r\n".encode()
        )
        response = b""
        while b"</Error>" not in response and (chunk := conn.recv(65536)):
            response += chunk
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert b"<Code>EntityTooLarge</Code>" in response
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="huge")


def test_many_keep_alive_connections(endpoint, credentials, bucket):
    data = os.urandom(2 * MIB)
    client = make_client(endpoint, *credentials, max_pool_connections=64)
    client.put_object(Bucket=bucket, Key="shared", Body=data)

    def fetch(i):
        start = (i * 4099) % (len(data) - 1000)
        got = client.get_object(Bucket=bucket, Key="shared", Range=f"bytes={start}-{start + 999}")
        return got["Body"].read() == data[start : start + 1000]

    with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
        assert all(pool.map(fetch, range(512)))


def test_any_node_serves_any_bucket(endpoints, credentials, s3, bucket):
    s3.put_object(Bucket=bucket, Key="everywhere", Body=b"hello")
    for endpoint in endpoints:
        client = make_client(endpoint, *credentials)
        assert client.get_object(Bucket=bucket, Key="everywhere")["Body"].read() == b"hello"


def test_virtual_hosted_style_addressing(endpoint, credentials, bucket, s3, monkeypatch):
    """The AWS SDKs' default addressing: the bucket in the host name (`BUCKET.localhost`, a
    name every node answers to by default), the key in the path."""
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        # No DNS here: names under localhost are this machine, as browsers and curl treat them.
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    port = endpoint.rsplit(":", 1)[1]
    access_key, secret = credentials
    virtual = boto3.client(
        "s3",
        endpoint_url=f"http://localhost:{port}",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}),
    )
    data = os.urandom(300_000)
    sent = []
    virtual.meta.events.register("before-send.s3.*", lambda request, **_: sent.append(request.url))
    virtual.put_object(Bucket=bucket, Key="dir/virtual.bin", Body=data, Metadata={"via": "vhost"})
    assert sent[-1].startswith(f"http://{bucket}.localhost:{port}/dir/virtual.bin"), sent[-1]
    assert virtual.get_object(Bucket=bucket, Key="dir/virtual.bin")["Body"].read() == data
    ranged = virtual.get_object(Bucket=bucket, Key="dir/virtual.bin", Range="bytes=10-19")
    assert ranged["Body"].read() == data[10:20]
    listed = virtual.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]
    assert [item["Key"] for item in listed] == ["dir/virtual.bin"]
    # The same object, path-style on the IP address.
    head = s3.head_object(Bucket=bucket, Key="dir/virtual.bin")
    assert head["ContentLength"] == len(data) and head["Metadata"] == {"via": "vhost"}
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        virtual.head_object(Bucket=f"{bucket}-missing", Key="dir/virtual.bin")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
