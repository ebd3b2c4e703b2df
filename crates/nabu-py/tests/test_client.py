"""The object API: put, get, ranges, stat, ls, delete, open, copy, rename, batches, errors."""

import ast
import asyncio
import hashlib
import io
import mmap
import threading

import fsspec
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


def test_a_client_from_a_node_address(cluster_file, prefix, monkeypatch):
    """`Client("host:port")`: a node's management address, the member list from it and the
    token from `$NABU_CLUSTER_TOKEN`; the same cluster as through the file."""
    import socket
    import tomllib

    with open(cluster_file, "rb") as file:
        config = tomllib.load(file)
    address = config["node"][0]["http_addr"]
    monkeypatch.setenv("NABU_CLUSTER_TOKEN", config["cluster_token"])
    by_address = nabustore.Client(address)
    assert by_address.cluster == address and by_address.namespace == "default"
    by_file = nabustore.Client(cluster_file)
    data = np.random.default_rng(6).integers(0, 256, (5 << 20) + 3, dtype=np.uint8)
    info = by_address.put(prefix + "via-address", data)
    assert by_file.get(prefix + "via-address") == data.tobytes()
    by_file.put(prefix + "via-file", b"from the file's client")
    assert by_address.get(prefix + "via-file") == b"from the file's client"
    assert by_address.stat(prefix + "via-address").blob_id == info.blob_id
    assert by_address.ls(prefix) == [prefix + "via-address", prefix + "via-file"]
    assert set(by_address.namespaces()) == set(by_file.namespaces())
    # Another node's address, the async client and fsspec take it too.
    other = config["node"][-1]["http_addr"]
    assert nabustore.Client(other, "kv").with_namespace("default").get(prefix + "via-file") == b"from the file's client"
    assert asyncio.run(nabustore.AsyncClient(address).get(prefix + "via-file")) == b"from the file's client"
    fs = fsspec.filesystem("nabu", cluster=address, skip_instance_cache=True)
    assert fs.cat(f"default/{prefix}via-file") == b"from the file's client"
    # As the default cluster (`$NABU_CLUSTER`), as for the `nabu` commands.
    monkeypatch.setenv("NABU_CLUSTER", address)
    assert nabustore.Client().cluster == address
    by_address.delete_many([prefix + "via-address", prefix + "via-file"])
    assert by_file.ls(prefix) == []

    # Without the token, or with a malformed one: an error that names the variable.
    monkeypatch.delenv("NABU_CLUSTER_TOKEN")
    with pytest.raises(nabustore.InvalidArgument, match="set NABU_CLUSTER_TOKEN"):
        nabustore.Client(address)
    monkeypatch.setenv("NABU_CLUSTER_TOKEN", "not hex")
    with pytest.raises(nabustore.InvalidArgument, match="NABU_CLUSTER_TOKEN"):
        nabustore.Client(address)
    # An address where no node listens.
    monkeypatch.setenv("NABU_CLUSTER_TOKEN", config["cluster_token"])
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{free.getsockname()[1]}"
    with pytest.raises(nabustore.NabuError, match=f"ask the node at {nobody}"):
        nabustore.Client(nobody)


def stub_classes(module):
    """`{class: {method or attribute: its node}}` and the top-level names of the `.pyi`
    beside `module`'s source."""
    import pathlib

    source = pathlib.Path(module.__file__)
    tree = ast.parse(source.with_suffix(".pyi").read_text())
    classes, names = {}, set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = {
                item.name: item
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
            classes[node.name].update(
                (item.target.id, item) for item in node.body if isinstance(item, ast.AnnAssign)
            )
            names.add(node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname for a in node.names if a.asname == a.name)
    return classes, names


def stub_parameters(function):
    arguments = function.args
    return [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]


def test_the_type_stubs_cover_the_python_layer():
    """`__init__.pyi`, `errors.pyi`, `filesystem.pyi` and `safetensors.pyi` declare every
    public name of their modules and every public method of their classes; `AsyncClient`'s
    stub has each I/O method as an `async def` with the parameters of `Client`'s."""
    import inspect

    import nabustore.errors
    import nabustore.filesystem
    import nabustore.safetensors

    for module in (nabustore, nabustore.errors, nabustore.filesystem, nabustore.safetensors):
        classes, names = stub_classes(module)
        public = set(getattr(module, "__all__", ())) | {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not inspect.ismodule(value)
            and getattr(value, "__module__", module.__name__) == module.__name__
        }
        assert public <= names, f"{module.__name__}: not in the stub: {public - names}"
        for name in classes:
            runtime = getattr(module, name)
            if runtime.__module__ != module.__name__:
                continue
            methods = {m for m in vars(runtime) if not m.startswith("_") or m in ("__init__", "_open")}
            assert methods <= set(classes[name]), f"{name}: not in the stub: {methods - set(classes[name])}"

    classes, _ = stub_classes(nabustore)
    for name, function in classes["AsyncClient"].items():
        runtime = getattr(nabustore.AsyncClient, name, None)
        if inspect.iscoroutinefunction(runtime):
            assert isinstance(function, ast.AsyncFunctionDef), f"AsyncClient.{name} is not async def"
            sync = classes["Client"][name]
            assert stub_parameters(function) == stub_parameters(sync), name
            assert list(inspect.signature(getattr(nabustore.Client, name)).parameters) == stub_parameters(sync), name
    # Every I/O method of `Client` has its coroutine.
    for name, value in vars(nabustore.Client).items():
        if not name.startswith("_") and inspect.isfunction(value) and name != "with_namespace":
            assert inspect.iscoroutinefunction(getattr(nabustore.AsyncClient, name)), name
            assert isinstance(classes["AsyncClient"][name], ast.AsyncFunctionDef), name
