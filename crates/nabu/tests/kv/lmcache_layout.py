"""LMCache's redis backend layout against a NabuStore pool smaller than the data.

Each chunk is two keys written in LMCache's order: `<key>kv_bytes` (the tensor bytes), then
`<key>metadata` (28 bytes); a reader tests existence on `metadata` and then GETs `kv_bytes`.
Checks: no SET fails although the data is larger than every pool together; every GET returns
the exact bytes written or a miss; a chunk whose metadata exists never misses its bytes.

Usage: python lmcache_layout.py HOST PORT PASSWORD CHUNKS CHUNK_BYTES
Prints one line `hits=N misses=M`; exits non-zero (AssertionError) on any violation.
"""

import struct
import sys

import redis


def chunk_key(n: int) -> str:
    return f"vllm@meta-llama/Llama-3.1-8B-Instruct@1@0@{7193353375021096452 + n}"


def tensor(n: int, size: int) -> bytes:
    return struct.pack("<I", n) * (size // 4)


def metadata(n: int) -> bytes:
    return struct.pack("<IIIIIII", n, 1, 2, 3, 4, 5, 6)  # 28 bytes, like LMCache's


def main() -> None:
    host, port, password = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    chunks, size = int(sys.argv[4]), int(sys.argv[5])
    r = redis.Redis(host=host, port=port, password=password)
    for n in range(chunks):
        key = chunk_key(n)
        assert r.set(key + "kv_bytes", tensor(n, size)) is True, f"SET kv_bytes {n} failed"
        assert r.set(key + "metadata", metadata(n)) is True, f"SET metadata {n} failed"
    hits = misses = 0
    for n in range(chunks):
        key = chunk_key(n)
        has_metadata = r.exists(key + "metadata") == 1
        value = r.get(key + "kv_bytes")
        if value is None:
            assert not has_metadata, f"chunk {n}: metadata exists but kv_bytes missed"
            misses += 1
            continue
        assert value == tensor(n, size), f"chunk {n}: wrong bytes"
        meta = r.get(key + "metadata")
        assert meta is None or meta == metadata(n), f"chunk {n}: wrong metadata"
        hits += 1
    print(f"hits={hits} misses={misses}")


if __name__ == "__main__":
    main()
