"""NabuStore from Python: a native client (the Rust `nabu-client`, GIL released during I/O)
with zero-copy reads into numpy, safetensors loading, atomic checkpoints, the KV cache, an
asyncio variant of every call, and an fsspec filesystem (`nabu://`).

    import nabustore
    client = nabustore.Client()                      # ./nabu-data/cluster.toml, as `nabu`
    client.put("weights/a.bin", b"...")
    tensors = client.load_safetensors("models/llama.safetensors")

See the README's "Python" section for a tour.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import mmap
import uuid
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import safetensors as _st
from ._native import DEFAULT_CLUSTER, Object, ObjectInfo
from ._native import Client as _NativeClient
from ._native import __version__
from .errors import (
    Corrupt,
    InvalidArgument,
    NabuError,
    NotDurable,
    NotFound,
    Timeout,
    Unavailable,
)

#: The format named in every checkpoint index.
CHECKPOINT_FORMAT = "nabustore-checkpoint/1"
#: The index object of a checkpoint, under its prefix; written last.
CHECKPOINT_INDEX = "index.json"
#: Where a checkpoint's tensors live, under its prefix, one folder per generation.
CHECKPOINT_DATA = "data"
#: Tensors of a loaded checkpoint start at multiples of this in their shared buffer.
CHECKPOINT_ALIGNMENT_BYTES = 64


def empty_bytes(size: int) -> np.ndarray:
    """A writable `uint8` array of `size` bytes in fresh anonymous memory (zero pages,
    faulted in as they are written) that is not advised as transparent huge pages: numpy's
    own allocations ask for huge pages, and the compaction that can cost made a 2 GiB load
    up to 2x slower on a machine with `defrag = madvise` (scripts/bench-python)."""
    if size == 0:
        return np.empty(0, dtype=np.uint8)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    return np.frombuffer(mmap.mmap(-1, size, flags=flags), dtype=np.uint8)


class ObjectReader(io.RawIOBase):
    """A read-only, seekable file over one version of an object (what `Client.open`
    returns): `read`, `readinto`, `seek`, `tell`, and a context manager."""

    def __init__(self, native: Object):
        super().__init__()
        self._object = native
        self._position = 0

    @property
    def size(self) -> int:
        """The object's length in bytes."""
        return self._object.size

    @property
    def info(self) -> ObjectInfo:
        """The version being read."""
        return self._object.info

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        if self._position >= self.size:
            return 0
        written = self._object.read_into(self._position, buffer)
        self._position += written
        return written

    def read(self, size: int = -1) -> bytes:
        left = max(self.size - self._position, 0)
        size = left if size is None or size < 0 else min(size, left)
        data = self._object.read(self._position, size)
        self._position += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`, without moving the position."""
        return self._object.read(offset, size)

    def read_into_at(self, offset: int, buffer: Any) -> int:
        """Reads from `offset` into `buffer` without moving the position."""
        return self._object.read_into(offset, buffer)


class Client:
    """A NabuStore client for one namespace.

    `cluster` is a `cluster.toml` path or a node's management address (`host:port`, token
    from `$NABU_CLUSTER_TOKEN`); by default `$NABU_CLUSTER`, else
    `./nabu-data/cluster.toml`, as the `nabu` commands. Keys are `str` or `bytes`. Every call
    that does I/O releases the GIL.
    """

    def __init__(
        self,
        cluster: str | None = None,
        namespace: str = "default",
        *,
        tcp: bool = False,
        stripes_inflight: int = 8,
        _native: _NativeClient | None = None,
    ):
        self._native = _native or _NativeClient(
            cluster, namespace, tcp=tcp, stripes_inflight=stripes_inflight
        )

    def __repr__(self) -> str:
        return f"nabustore.Client(cluster={self.cluster!r}, namespace={self.namespace!r})"

    @property
    def namespace(self) -> str:
        """The namespace this client reads and writes."""
        return self._native.namespace

    @property
    def cluster(self) -> str:
        """The cluster it was given."""
        return self._native.cluster

    def with_namespace(self, namespace: str) -> "Client":
        """A client of `namespace` sharing this one's connections."""
        return Client(_native=self._native.with_namespace(namespace))

    def namespaces(self) -> list[str]:
        """The namespaces of the cluster."""
        return self._native.namespaces()

    # Objects.

    def put(self, key: str | bytes, data: Any, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Stores `data` (bytes or any C-contiguous buffer: numpy array, bytearray,
        memoryview, mmap; not copied, so do not change it during the call) under `key`,
        replacing what was there. Visible only once all of it is durable."""
        return self._native.put(key, data, dict(metadata) if metadata else None)

    def put_many(self, items: Iterable[tuple[str | bytes, Any]]) -> list[ObjectInfo]:
        """Stores every `(key, data)` pair, several at once (each put visible once
        durable)."""
        return self._native.put_many(list(items))

    def get(self, key: str | bytes) -> bytes:
        """The whole object."""
        return self._native.get(key)

    def get_range(self, key: str | bytes, start: int, end: int) -> bytes:
        """Bytes `start..end` of the object (`end` clamped to its size)."""
        return self._native.get_range(key, start, end)

    def get_into(self, key: str | bytes, buffer: Any, offset: int = 0) -> int:
        """Reads the object, from byte `offset` on, straight into `buffer` (a writable,
        C-contiguous buffer: numpy array, bytearray, memoryview, pinned host memory), as
        much as fits or up to the object's end: no copy but the one from the network into
        `buffer`. Returns the bytes written."""
        return self._native.get_into(key, buffer, offset)

    def get_many_into(self, keys: Sequence[str | bytes], buffers: Sequence[Any]) -> list[int]:
        """`get_into` of each key into its buffer, several at once."""
        return self._native.get_many_into(list(keys), list(buffers))

    def get_ranges(
        self, keys: Sequence[str | bytes], starts: Sequence[int], ends: Sequence[int]
    ) -> list[bytes]:
        """Bytes `starts[i]..ends[i]` of each `keys[i]`, several at once."""
        return self._native.get_ranges(list(keys), list(starts), list(ends))

    def stat(self, key: str | bytes) -> ObjectInfo:
        """Size, blob id, time written and user metadata of the object."""
        return self._native.stat(key)

    def stat_many(self, keys: Sequence[str | bytes]) -> list[ObjectInfo | None]:
        """`stat` of each key, several at once; `None` for a missing key."""
        return self._native.stat_many(list(keys))

    def exists(self, key: str | bytes) -> bool:
        """Whether the key holds an object."""
        try:
            self.stat(key)
            return True
        except NotFound:
            return False

    def ls(self, prefix: str | bytes = "") -> list[str]:
        """Every key starting with `prefix`, in byte order."""
        return self._native.ls(prefix)

    def delete(self, key: str | bytes) -> None:
        """Deletes the key (deleting a missing key succeeds)."""
        self._native.delete(key)

    def delete_many(self, keys: Iterable[str | bytes]) -> None:
        """Deletes every key, several at once."""
        self._native.delete_many(list(keys))

    def copy(self, source: str | bytes, destination: str | bytes) -> ObjectInfo:
        """Stores under `destination` what `source` holds, without moving bytes."""
        return self._native.copy(source, destination)

    def rename(self, source: str | bytes, destination: str | bytes) -> None:
        """Renames without moving bytes (the same blob under the new key, then the old key
        deleted; a failure between the two leaves both, never neither)."""
        self._native.rename(source, destination)

    def open(self, key: str | bytes) -> ObjectReader:
        """The object's current version as a read-only, seekable binary file."""
        return ObjectReader(self._native.open(key))

    # numpy and safetensors.

    def load_safetensors(self, key: str | bytes) -> dict[str, np.ndarray]:
        """The tensors of a safetensors object as numpy arrays: one small ranged read for
        the header, then the data section read in parallel (stripes at once) straight into
        one preallocated buffer; every tensor is a view into it (no copy)."""
        tensors, _ = self.load_safetensors_with_metadata(key)
        return tensors

    def load_safetensors_with_metadata(
        self, key: str | bytes
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """`load_safetensors` and the file's `__metadata__`."""
        with self.open(key) as reader:
            size = reader.size
            probe = reader.read_at(0, _st.HEADER_PROBE_BYTES)
            length = _st.header_length(probe, size)
            header = probe[8 : 8 + length]
            if len(header) < length:
                header += reader.read_at(len(probe), 8 + length - len(probe))
            start = 8 + length
            tensors, metadata = _st.parse_header(header, size - start)
            data = empty_bytes(size - start)
            if data.size:
                written = reader.read_into_at(start, data)
                if written != data.size:
                    raise Corrupt(f"read {written} of {data.size} data bytes of {key!r}")
        return _st.views(data, tensors), metadata

    def save_safetensors(
        self,
        key: str | bytes,
        tensors: Mapping[str, np.ndarray],
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Stores `tensors` as one safetensors object (readable by the `safetensors`
        package and `load_safetensors`)."""
        return self.put(key, _st.serialize(tensors, metadata))

    # Checkpoints.

    def save_checkpoint(
        self,
        prefix: str,
        tensors: Mapping[str, np.ndarray],
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Saves `tensors` under `prefix`, one object per tensor written in parallel, then
        the index (`prefix/index.json`) last: a reader sees the previous checkpoint or this
        one, never a mix or half of one. Returns the new generation's id. The generation
        before the previous one is deleted afterwards (the previous one stays, so a load
        that read the old index still finds its tensors)."""
        prefix = prefix.rstrip("/")
        generation = uuid.uuid4().hex
        old = self._checkpoint_index(prefix)
        arrays = {name: _st.contiguous(array) for name, array in tensors.items()}
        entries = {}
        items = []
        for number, (name, array) in enumerate(arrays.items()):
            key = f"{prefix}/{CHECKPOINT_DATA}/{generation}/{number}"
            entries[name] = {
                "key": key,
                "dtype": _st.dtype_name(array.dtype),
                "shape": list(array.shape),
                "bytes": array.nbytes,
            }
            items.append((key, array.reshape(-1).view(np.uint8)))
        self.put_many(items)
        index = {
            "format": CHECKPOINT_FORMAT,
            "generation": generation,
            "previous": old["generation"] if old else None,
            "tensors": entries,
            "metadata": dict(metadata or {}),
        }
        self.put(f"{prefix}/{CHECKPOINT_INDEX}", json.dumps(index).encode())
        keep = {generation, index["previous"]}
        stale = [
            key
            for key in self.ls(f"{prefix}/{CHECKPOINT_DATA}/")
            if key[len(prefix) + len(CHECKPOINT_DATA) + 2 :].split("/", 1)[0] not in keep
        ]
        self.delete_many(stale)
        return generation

    def load_checkpoint(self, prefix: str) -> dict[str, np.ndarray]:
        """The tensors of the checkpoint under `prefix` as numpy arrays, read in parallel
        into one preallocated buffer (each tensor a view into it)."""
        tensors, _ = self.load_checkpoint_with_metadata(prefix)
        return tensors

    def load_checkpoint_with_metadata(
        self, prefix: str
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """`load_checkpoint` and the metadata it was saved with."""
        prefix = prefix.rstrip("/")
        index = self._checkpoint_index(prefix)
        if index is None:
            raise NotFound(f"no checkpoint under {prefix!r} ({prefix}/{CHECKPOINT_INDEX})")
        layout = {}
        offset = 0
        for name, entry in index["tensors"].items():
            layout[name] = (offset, entry)
            offset += entry["bytes"]
            offset += -offset % CHECKPOINT_ALIGNMENT_BYTES
        buffer = empty_bytes(offset)
        keys, views = [], []
        for offset, entry in layout.values():
            keys.append(entry["key"])
            views.append(buffer[offset : offset + entry["bytes"]])
        written = self.get_many_into(keys, views)
        out = {}
        for (name, (offset, entry)), count in zip(layout.items(), written):
            if count != entry["bytes"]:
                raise Corrupt(f"tensor {name!r}: {count} bytes, the index says {entry['bytes']}")
            dtype = _st.numpy_dtype(entry["dtype"])
            out[name] = np.frombuffer(
                buffer, dtype=dtype, count=entry["bytes"] // dtype.itemsize, offset=offset
            ).reshape(entry["shape"])
        return out, index.get("metadata", {})

    def _checkpoint_index(self, prefix: str) -> dict[str, Any] | None:
        try:
            index = json.loads(self.get(f"{prefix}/{CHECKPOINT_INDEX}"))
        except NotFound:
            return None
        if index.get("format") != CHECKPOINT_FORMAT:
            raise InvalidArgument(f"{prefix}/{CHECKPOINT_INDEX} is not a {CHECKPOINT_FORMAT} index")
        return index

    # KV cache.

    def kv_put_many(
        self,
        items: Iterable[tuple[str | bytes, Any]] | Mapping[str | bytes, Any],
        *,
        ttl_ms: int = 0,
        pin: bool = False,
        namespace: str = "kv",
    ) -> list[bool]:
        """Puts KV-cache values (`(key, buffer)` pairs or a mapping) into the nodes' memory
        pools, each on its owner node, owners in parallel: per item whether it was
        stored."""
        if isinstance(items, Mapping):
            items = items.items()
        return self._native.kv_put_many(list(items), ttl_ms=ttl_ms, pin=pin, namespace=namespace)

    def kv_get_many(
        self, keys: Sequence[str | bytes], buffers: Sequence[Any], *, namespace: str = "kv"
    ) -> list[int | None]:
        """Reads KV-cache values into the caller's buffers: per key the bytes written, or
        `None` for a miss (a value longer than its buffer raises `InvalidArgument`)."""
        return self._native.kv_get_many(list(keys), list(buffers), namespace=namespace)

    def kv_prefix_lookup(
        self, keys: Sequence[str | bytes], lease_ms: int = 0, *, namespace: str = "kv"
    ) -> int:
        """How many of `keys`, from the first, are all cached (the longest such prefix),
        those values leased against eviction for `lease_ms`: one round trip."""
        return self._native.kv_prefix_lookup(list(keys), lease_ms, namespace=namespace)

    def kv_delete_many(self, keys: Sequence[str | bytes], *, namespace: str = "kv") -> int:
        """Deletes KV-cache values: how many were held."""
        return self._native.kv_delete_many(list(keys), namespace=namespace)


def _to_thread(method):
    name = method.__name__

    @functools.wraps(method)
    async def call(self, *args, **kwargs):
        return await asyncio.to_thread(getattr(self.sync, name), *args, **kwargs)

    return call


class AsyncClient:
    """The `Client` for asyncio: every I/O method is a coroutine run on a worker thread
    (`asyncio.to_thread`). The native calls release the GIL, so many run at once and the
    event loop stays free."""

    def __init__(self, cluster: str | None = None, namespace: str = "default", **options: Any):
        self.sync = Client(cluster, namespace, **options)

    @classmethod
    def of(cls, client: Client) -> "AsyncClient":
        """The asyncio face of an existing client (sharing its connections)."""
        wrapper = cls.__new__(cls)
        wrapper.sync = client
        return wrapper

    def __repr__(self) -> str:
        return f"nabustore.AsyncClient(cluster={self.cluster!r}, namespace={self.namespace!r})"

    @property
    def namespace(self) -> str:
        """The namespace this client reads and writes."""
        return self.sync.namespace

    @property
    def cluster(self) -> str:
        """The cluster it was given."""
        return self.sync.cluster

    def with_namespace(self, namespace: str) -> "AsyncClient":
        """A client of `namespace` sharing this one's connections."""
        return AsyncClient.of(self.sync.with_namespace(namespace))

    put = _to_thread(Client.put)
    put_many = _to_thread(Client.put_many)
    get = _to_thread(Client.get)
    get_range = _to_thread(Client.get_range)
    get_into = _to_thread(Client.get_into)
    get_many_into = _to_thread(Client.get_many_into)
    get_ranges = _to_thread(Client.get_ranges)
    stat = _to_thread(Client.stat)
    stat_many = _to_thread(Client.stat_many)
    exists = _to_thread(Client.exists)
    ls = _to_thread(Client.ls)
    delete = _to_thread(Client.delete)
    delete_many = _to_thread(Client.delete_many)
    copy = _to_thread(Client.copy)
    rename = _to_thread(Client.rename)
    open = _to_thread(Client.open)
    namespaces = _to_thread(Client.namespaces)
    load_safetensors = _to_thread(Client.load_safetensors)
    load_safetensors_with_metadata = _to_thread(Client.load_safetensors_with_metadata)
    save_safetensors = _to_thread(Client.save_safetensors)
    save_checkpoint = _to_thread(Client.save_checkpoint)
    load_checkpoint = _to_thread(Client.load_checkpoint)
    load_checkpoint_with_metadata = _to_thread(Client.load_checkpoint_with_metadata)
    kv_put_many = _to_thread(Client.kv_put_many)
    kv_get_many = _to_thread(Client.kv_get_many)
    kv_prefix_lookup = _to_thread(Client.kv_prefix_lookup)
    kv_delete_many = _to_thread(Client.kv_delete_many)


__all__ = [
    "AsyncClient",
    "Client",
    "Corrupt",
    "DEFAULT_CLUSTER",
    "InvalidArgument",
    "NabuError",
    "NotDurable",
    "NotFound",
    "Object",
    "ObjectInfo",
    "ObjectReader",
    "Timeout",
    "Unavailable",
    "__version__",
    "empty_bytes",
]
