"""Checkpoints (parallel, atomic), the KV cache, and the asyncio client."""

import asyncio
import threading

import numpy as np
import pytest

import nabustore


def tensors_of(generation, shapes=((64, 1024), (3, 5, 7), (100_000,))):
    """Tensors whose every element is `generation`: a mixed load is visible at a glance."""
    dtypes = (np.float32, np.int64, np.float16)
    return {f"t{i}": np.full(shape, generation, dtype) for i, (shape, dtype) in enumerate(zip(shapes, dtypes))}


def test_checkpoint_round_trip_and_generations(client, prefix):
    first = tensors_of(1)
    generation_1 = client.save_checkpoint(prefix + "ck", first, metadata={"step": "1"})
    loaded, metadata = client.load_checkpoint_with_metadata(prefix + "ck")
    assert metadata == {"step": "1"}
    assert all(np.array_equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in first.items())
    generation_2 = client.save_checkpoint(prefix + "ck", tensors_of(2))
    generation_3 = client.save_checkpoint(prefix + "ck/", tensors_of(3))
    assert all((t == 3).all() for t in client.load_checkpoint(prefix + "ck").values())
    # The previous generation stays (a load that read the old index still finds it); the
    # one before it is gone.
    generations = {key.split("/")[-2] for key in client.ls(prefix + "ck/data/")}
    assert generations == {generation_2, generation_3}
    assert generation_1 not in generations
    with pytest.raises(nabustore.NotFound, match="no checkpoint"):
        client.load_checkpoint(prefix + "nothing")


def test_a_checkpoint_is_never_seen_half_written(client, prefix):
    """A reader loading over and over while a writer saves generation after generation sees
    every tensor of one generation, never a mix; a save that fails before its index leaves
    the previous checkpoint."""
    client.save_checkpoint(prefix + "ck", tensors_of(0))
    seen = set()
    stop = threading.Event()
    failures = []

    def reader():
        while not stop.is_set():
            loaded = client.load_checkpoint(prefix + "ck").values()
            values = {float(t.flat[0]) for t in loaded} | {float(t.flat[-1]) for t in loaded}
            if len(values) != 1:
                failures.append(values)
            seen.update(values)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for generation in range(1, 8):
            client.save_checkpoint(prefix + "ck", tensors_of(generation))
    finally:
        stop.set()
        thread.join()
    assert not failures, f"mixed checkpoints loaded: {failures}"
    assert len(seen) >= 2

    # A save whose index put fails: its tensors are stored, the checkpoint is unchanged.
    class IndexFails(nabustore.Client):
        def put(self, key, data, metadata=None):
            if key.endswith("index.json"):
                raise nabustore.NotDurable("index put refused (test)")
            return super().put(key, data, metadata)

    failing = IndexFails(_native=client._native)
    with pytest.raises(nabustore.NotDurable):
        failing.save_checkpoint(prefix + "ck", tensors_of(99))
    assert all((t == 7).all() for t in client.load_checkpoint(prefix + "ck").values())


def test_kv_put_get_prefix_lookup_and_delete(client, prefix):
    blocks = [np.full(4096, i, dtype=np.uint8) for i in range(6)]
    keys = [f"{prefix}block{i}" for i in range(6)]
    assert client.kv_put_many(list(zip(keys[:4], blocks[:4]))) == [True] * 4
    assert client.kv_put_many({keys[5]: blocks[5]}, ttl_ms=60_000) == [True]
    buffers = [np.zeros(4096, dtype=np.uint8) for _ in keys]
    addresses = [b.ctypes.data for b in buffers]
    assert client.kv_get_many(keys, buffers) == [4096] * 4 + [None, 4096]
    assert [b.ctypes.data for b in buffers] == addresses
    for i in (0, 1, 2, 3, 5):
        assert np.array_equal(buffers[i], blocks[i])
    assert not buffers[4].any()
    assert client.kv_prefix_lookup(keys, lease_ms=1000) == 4
    assert client.kv_prefix_lookup(keys[4:]) == 0
    with pytest.raises(nabustore.InvalidArgument, match="4096 bytes, its buffer 100"):
        client.kv_get_many(keys[:1], [bytearray(100)])
    assert client.kv_delete_many(keys) == 5
    assert client.kv_get_many(keys[:1], [bytearray(4096)]) == [None]


def test_the_asyncio_client_runs_calls_concurrently(cluster_file, prefix):
    async def main():
        client = nabustore.AsyncClient(cluster_file)
        payloads = {f"{prefix}a{i}": bytes([i]) * (1 << 20) for i in range(8)}
        await asyncio.gather(*(client.put(k, v) for k, v in payloads.items()))
        values = await asyncio.gather(*(client.get(k) for k in payloads))
        assert values == list(payloads.values())
        buffer = np.zeros(1 << 20, dtype=np.uint8)
        assert await client.get_into(f"{prefix}a3", buffer) == 1 << 20 and (buffer == 3).all()
        await client.save_safetensors(f"{prefix}m", {"x": np.eye(3)})
        assert np.array_equal((await client.load_safetensors(f"{prefix}m"))["x"], np.eye(3))
        await client.save_checkpoint(f"{prefix}ck", {"y": np.arange(5)})
        assert np.array_equal((await client.load_checkpoint(f"{prefix}ck"))["y"], np.arange(5))
        assert await client.kv_put_many([(f"{prefix}kv", b"v")]) == [True]
        assert await client.kv_prefix_lookup([f"{prefix}kv"]) == 1
        assert sorted(await client.ls(prefix)) == sorted(await client.ls(prefix))
        with pytest.raises(nabustore.NotFound):
            await client.get(f"{prefix}missing")
        await client.delete_many(list(payloads))
        assert not await client.exists(f"{prefix}a0")

    asyncio.run(main())


def test_every_asyncio_call_does_what_the_sync_one_does(cluster_file, prefix):
    """The `AsyncClient` calls, many of them at once through `asyncio.gather`: the same
    answers as the sync `Client`'s, buffers written in place, errors raised the same."""
    sync = nabustore.Client(cluster_file)

    async def main():
        client = nabustore.AsyncClient(cluster_file)
        assert (client.cluster, client.namespace) == (cluster_file, "default")
        assert repr(client).startswith("nabustore.AsyncClient(")
        keys = [f"{prefix}o{i}" for i in range(6)]
        payloads = [bytes([i + 1]) * ((i + 1) * 700_000) for i in range(6)]

        # put, stat, get, get_into: six of each at once.
        infos = await asyncio.gather(
            *(client.put(k, v, metadata={"i": str(i)}) for i, (k, v) in enumerate(zip(keys, payloads)))
        )
        assert [i.size for i in infos] == [len(v) for v in payloads]
        stats = await asyncio.gather(*(client.stat(k) for k in keys))
        assert [(s.key, s.size, s.blob_id, s.metadata) for s in stats] == [
            (k, len(v), info.blob_id, {"i": str(i)})
            for i, (k, v, info) in enumerate(zip(keys, payloads, infos))
        ]
        assert [s.blob_id for s in stats] == [sync.stat(k).blob_id for k in keys]
        assert await asyncio.gather(*(client.get(k) for k in keys)) == payloads
        buffers = [np.full(len(v) + 8, 0xEE, dtype=np.uint8) for v in payloads]
        addresses = [b.ctypes.data for b in buffers]
        written = await asyncio.gather(*(client.get_into(k, b) for k, b in zip(keys, buffers)))
        assert written == [len(v) for v in payloads]
        assert [b.ctypes.data for b in buffers] == addresses
        for value, buffer in zip(payloads, buffers):
            assert buffer[: len(value)].tobytes() == value and (buffer[len(value) :] == 0xEE).all()
        tail = bytearray(100)
        assert await client.get_into(keys[5], tail, offset=len(payloads[5]) - 10) == 10
        assert bytes(tail[:10]) == payloads[5][-10:]

        # ls and delete.
        assert await client.ls(prefix) == sorted(keys) == sync.ls(prefix)
        await asyncio.gather(*(client.delete(k) for k in keys[:3]))
        assert await client.ls(prefix) == keys[3:]
        gone = await asyncio.gather(*(client.stat(k) for k in keys[:2]), return_exceptions=True)
        assert all(isinstance(error, nabustore.NotFound) for error in gone)
        assert not await client.exists(keys[0]) and await client.exists(keys[3])

        # The other object calls.
        assert await client.get_range(keys[3], 5, 9) == payloads[3][5:9]
        assert await client.get_ranges(keys[3:5], [0, 1], [2, 4]) == [payloads[3][:2], payloads[4][1:4]]
        assert [s.size if s else None for s in await client.stat_many([keys[3], keys[0]])] == [len(payloads[3]), None]
        many = [(f"{prefix}m{i}", bytes([i]) * 1000) for i in range(4)]
        assert [i.size for i in await client.put_many(many)] == [1000] * 4
        targets = [bytearray(1000) for _ in many]
        assert await client.get_many_into([k for k, _ in many], targets) == [1000] * 4
        assert [bytes(t) for t in targets] == [v for _, v in many]
        assert (await client.copy(keys[3], f"{prefix}copy")).blob_id == stats[3].blob_id
        await client.rename(f"{prefix}copy", f"{prefix}renamed")
        reader = await client.open(f"{prefix}renamed")
        with reader:
            reader.seek(10)
            assert reader.read(5) == payloads[3][10:15]
        await client.delete_many([k for k, _ in many] + keys[3:] + [f"{prefix}renamed"])
        assert await client.ls(prefix) == []
        assert "default" in await client.namespaces()

        # KV: puts, gets and prefix lookups at once.
        blocks = {f"{prefix}kv{i}": np.full(4096, i + 1, dtype=np.uint8) for i in range(4)}
        kv_keys = list(blocks)
        stored = await asyncio.gather(
            client.kv_put_many([(k, blocks[k]) for k in kv_keys[:2]]),
            client.kv_put_many({kv_keys[2]: blocks[kv_keys[2]]}, ttl_ms=60_000),
        )
        assert stored == [[True, True], [True]]
        kv_buffers = [np.zeros(4096, dtype=np.uint8) for _ in kv_keys]
        got, cached, none = await asyncio.gather(
            client.kv_get_many(kv_keys, kv_buffers),
            client.kv_prefix_lookup(kv_keys, lease_ms=1000),
            client.kv_prefix_lookup(kv_keys[3:]),
        )
        assert (got, cached, none) == ([4096, 4096, 4096, None], 3, 0)
        for key, buffer in zip(kv_keys[:3], kv_buffers):
            assert np.array_equal(buffer, blocks[key])
        assert not kv_buffers[3].any()
        assert sync.kv_prefix_lookup(kv_keys) == 3
        with pytest.raises(nabustore.InvalidArgument, match="4096 bytes, its buffer 10"):
            await client.kv_get_many(kv_keys[:1], [bytearray(10)])
        assert await client.kv_delete_many(kv_keys) == 3
        assert await client.kv_get_many(kv_keys[:1], [bytearray(4096)]) == [None]

        # Other namespaces, and the asyncio face of an existing client.
        assert client.with_namespace("kv").namespace == "kv"
        shared = nabustore.AsyncClient.of(sync)
        assert shared.sync is sync
        await shared.put(f"{prefix}shared", b"one client")
        assert sync.get(f"{prefix}shared") == b"one client"
        await shared.delete(f"{prefix}shared")

    asyncio.run(main())
