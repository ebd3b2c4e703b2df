"""The S3 gateway under s3fs/fsspec, written the way a PyTorch distributed checkpoint is:
many ranks write `*.tmp` files in parallel, rename them into place (copy + delete), and read
them back."""

import concurrent.futures
import hashlib
import os
import uuid

import s3fs

MIB = 1 << 20


def test_s3fs_parallel_write_rename_read(endpoint, credentials, s3):
    bucket = f"fs-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(
        key=credentials[0],
        secret=credentials[1],
        endpoint_url=endpoint,
        client_kwargs={"region_name": "us-east-1"},
        config_kwargs={"s3": {"addressing_style": "path"}},
        default_block_size=5 * MIB,  # files above it are multipart, 5 MiB parts
        use_listings_cache=False,
    )
    fs.mkdir(bucket)
    ranks = 16
    sizes = [300_000 + rank * 1_000 if rank % 2 else 11 * MIB + rank for rank in range(ranks)]
    payloads = {rank: os.urandom(size) for rank, size in enumerate(sizes)}

    def save(rank):
        tmp = f"{bucket}/ckpt/step-1/__{rank}_0.distcp.tmp"
        with fs.open(tmp, "wb") as f:
            data = payloads[rank]
            for at in range(0, len(data), 3 * MIB):
                f.write(data[at : at + 3 * MIB])
        fs.mv(tmp, tmp.removesuffix(".tmp"))
        return rank

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(save, range(ranks))) == list(range(ranks))
    fs.pipe(f"{bucket}/ckpt/step-1/.metadata", b"{}")

    names = sorted(fs.ls(f"{bucket}/ckpt/step-1/", detail=False))
    assert names == sorted(
        [f"{bucket}/ckpt/step-1/__{r}_0.distcp" for r in range(ranks)]
        + [f"{bucket}/ckpt/step-1/.metadata"]
    )
    assert fs.glob(f"{bucket}/ckpt/step-1/*.tmp") == []

    def load(rank):
        path = f"{bucket}/ckpt/step-1/__{rank}_0.distcp"
        whole = fs.cat(path)
        with fs.open(path, "rb") as f:
            f.seek(len(whole) // 2)
            half = f.read(4096)
        return rank, hashlib.sha256(whole).digest(), half

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for rank, digest, half in pool.map(load, range(ranks)):
            data = payloads[rank]
            assert digest == hashlib.sha256(data).digest(), rank
            assert half == data[len(data) // 2 : len(data) // 2 + 4096], rank
    assert fs.info(f"{bucket}/ckpt/step-1/__0_0.distcp")["size"] == sizes[0]

    fs.rm(f"{bucket}/ckpt", recursive=True)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.delete_bucket(Bucket=bucket)
