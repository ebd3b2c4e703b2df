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
