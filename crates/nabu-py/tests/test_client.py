"""The object API: put, get, ranges, stat, ls, delete, open, copy, rename, batches, errors."""

import hashlib
import io
import mmap
import threading

import numpy as np
import pytest

import nabustore


def test_put_get_stat_ls_delete_round_trip(client, prefix):
    data = bytes(range(256)) * 5000 + b"tail"
    info = client.put(prefix + "a", data, metadata={"content-type": "x/test"})
    assert info.size == len(data)
    assert len(info.blob_id) == 64
    assert client.get(prefix + "a") == data
    assert client.get_range(prefix + "a", 1000, 1010) == data[1000:1010]
    assert client.get_range(prefix + "a", len(data) - 2, len(data) + 100) == b"il"
    stat = client.stat(prefix + "a")
    assert (stat.size, stat.blob_id, stat.key) == (len(data), info.blob_id, prefix + "a")
    assert stat.metadata == {"content-type": "x/test"}
    assert stat.modified > 1.7e9
    client.put(prefix + "b/c", b"")
    client.put((prefix + "bytes-key").encode(), b"raw key")
    assert client.get(prefix + "b/c") == b""
    assert client.ls(prefix) == [prefix + "a", prefix + "b/c", prefix + "bytes-key"]
    assert client.exists(prefix + "a")
    client.delete(prefix + "a")
    client.delete(prefix + "never-there")
    assert not client.exists(prefix + "a")
    assert client.ls(prefix) == [prefix + "b/c", prefix + "bytes-key"]


def test_same_bytes_same_blob_id_and_overwrite_wins(client, prefix):
    first = client.put(prefix + "x", b"one")
    assert client.put(prefix + "y", b"one").blob_id == first.blob_id
    client.put(prefix + "x", b"two")
    assert client.get(prefix + "x") == b"two"
    assert client.get(prefix + "y") == b"one"


def test_every_buffer_kind_can_be_put_without_conversion(client, prefix, tmp_path):
    array = np.arange(1000, dtype=np.float64)
    payloads = {
        "numpy": array,
        "bytearray": bytearray(b"ab" * 1000),
        "memoryview": memoryview(b"xyz" * 333),
        "2d": np.ones((7, 9), dtype=np.int16),
    }
    path = tmp_path / "file.bin"
    path.write_bytes(b"mapped" * 1000)
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        client.put(prefix + "mmap", mapped)
    for name, payload in payloads.items():
        client.put(prefix + name, payload)
        assert client.get(prefix + name) == bytes(memoryview(payload).cast("B"))
    assert client.get(prefix + "mmap") == b"mapped" * 1000
    with pytest.raises(BufferError, match="contiguous"):
        client.put(prefix + "strided", array[::2])


def test_open_pins_one_version_and_behaves_as_a_file(client, prefix):
    data = np.random.default_rng(1).integers(0, 256, 9 << 20, dtype=np.uint8).tobytes()
    client.put(prefix + "f", data)
    with client.open(prefix + "f") as file:
        assert file.size == len(data) and file.readable() and file.seekable()
        client.put(prefix + "f", b"replaced")  # the open version does not change
        assert file.read(10) == data[:10]
        assert file.seek(4 << 20) == 4 << 20
        buffer = bytearray(100)
        assert file.readinto(buffer) == 100 and bytes(buffer) == data[(4 << 20) : (4 << 20) + 100]
        assert file.tell() == (4 << 20) + 100
        file.seek(-5, io.SEEK_END)
        assert file.read() == data[-5:]
        assert file.read() == b""
        file.seek(0)
        assert hashlib.sha256(io.BufferedReader(file).read()).digest() == hashlib.sha256(data).digest()
    assert client.get(prefix + "f") == b"replaced"


def test_copy_and_rename_move_no_bytes(client, prefix):
    info = client.put(prefix + "src", b"s" * 100_000, metadata={"k": "v"})
    copied = client.copy(prefix + "src", prefix + "copy")
    assert copied.blob_id == info.blob_id and copied.metadata == {"k": "v"}
    client.rename(prefix + "src", prefix + "dst")
    assert not client.exists(prefix + "src")
    assert client.stat(prefix + "dst").blob_id == info.blob_id
    assert client.get(prefix + "dst") == b"s" * 100_000
    with pytest.raises(nabustore.NotFound):
        client.rename(prefix + "src", prefix + "elsewhere")


def test_batches(client, prefix):
    items = [(f"{prefix}k{i}", bytes([i]) * (i * 1000 + 1)) for i in range(20)]
    infos = client.put_many(items)
    assert [i.size for i in infos] == [len(v) for _, v in items]
    keys = [k for k, _ in items]
    buffers = [np.zeros(len(v) + 3, dtype=np.uint8) for _, v in items]
    assert client.get_many_into(keys, buffers) == [len(v) for _, v in items]
    for (_, value), buffer in zip(items, buffers):
        assert buffer[: len(value)].tobytes() == value and not buffer[len(value) :].any()
    assert client.get_ranges(keys[:3], [0, 1, 2], [1, 3, 100]) == [
        items[0][1][:1],
        items[1][1][1:3],
        items[2][1][2:100],
    ]
    stats = client.stat_many(keys[:2] + [prefix + "missing"])
    assert [s.size if s else None for s in stats] == [1, 1001, None]
    client.delete_many(keys)
    assert client.ls(prefix) == []
    shared = np.zeros(10, dtype=np.uint8)
    with pytest.raises(ValueError, match="overlap"):
        client.get_many_into(keys[:2], [shared[:6], shared[4:]])


def test_namespaces_are_separate(client, prefix):
    assert {"default", "kv"} <= set(client.namespaces())
    other = client.with_namespace("kv")
    assert other.namespace == "kv"
    client.put(prefix + "ns", b"default's")
    with pytest.raises(nabustore.NotFound):
        other.get(prefix + "ns")


def test_errors_are_typed_and_say_what_failed(client, prefix, tmp_path):
    with pytest.raises(nabustore.NotFound, match=prefix + "absent") as missing:
        client.get(prefix + "absent")
    assert isinstance(missing.value, FileNotFoundError)
    assert isinstance(missing.value, nabustore.NabuError)
    client.put(prefix + "small", b"12345")
    with pytest.raises(nabustore.InvalidArgument, match="past the end of an object of 5 bytes") as bad:
        client.get_range(prefix + "small", 6, 7)
    assert isinstance(bad.value, ValueError)
    with pytest.raises(nabustore.InvalidArgument, match="key"):
        client.put("", b"x")
    with pytest.raises(BufferError, match="read-only"):
        client.get_into(prefix + "small", b"immutable")
    with pytest.raises(nabustore.NabuError, match="cluster file"):
        nabustore.Client(str(tmp_path / "missing.toml"))
    # A cluster whose nodes are all gone: the put says it could not be made durable.
    dead = tmp_path / "dead.toml"
    dead.write_text(
        'cluster_token = "' + "ab" * 32 + '"\n'
        + "".join(
            f'[[node]]\nid = {i}\nzone = "z"\npid = 0\ndata_addr = "127.0.0.1:{9 + i}"\n'
            f'peer_addr = "127.0.0.1:1"\nhttp_addr = "127.0.0.1:1"\nconfig = "/x"\n'
            for i in range(1, 4)
        )
    )
    unreachable = nabustore.Client(str(dead))
    with pytest.raises(nabustore.Unavailable) as down:
        unreachable.put("k", b"v")
    assert isinstance(down.value, ConnectionError)
    assert "durable" in str(down.value) or "unavailable" in str(down.value)


def test_io_releases_the_gil(client, prefix):
    """A thread blocked in a large read leaves the interpreter to others: the main thread
    counts while it runs. Were the GIL held through the read, the count would stall."""
    size = 64 << 20
    client.put(prefix + "big", np.ones(size, dtype=np.uint8))
    target = np.zeros(size, dtype=np.uint8)
    started, done = threading.Event(), threading.Event()

    def read():
        started.set()
        for _ in range(4):
            client.get_into(prefix + "big", target)
        done.set()

    worker = threading.Thread(target=read)
    worker.start()
    started.wait()
    counted = 0
    while not done.is_set():
        counted += 1
    worker.join()
    assert target.all()
    assert counted > 10_000, f"the main thread ran only {counted} iterations during the reads"


def test_the_type_stubs_name_every_native_method():
    """`_native.pyi` declares every public method and property of the native classes."""
    import ast
    import pathlib

    from nabustore import _native

    stub = ast.parse((pathlib.Path(_native.__file__).parent / "_native.pyi").read_text())
    declared = {
        node.name: {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        for node in stub.body
        if isinstance(node, ast.ClassDef)
    }
    for name in ("Client", "Object", "ObjectInfo"):
        public = {m for m in dir(getattr(_native, name)) if not m.startswith("_")}
        assert public <= declared[name], f"{name}: not in the stub: {public - declared[name]}"
