"""`nabu://`: NabuStore as an fsspec filesystem, so fsspec-based tools (PyTorch distributed
checkpoint writers, pandas, datasets) read and write it directly.

Paths are `nabu://NAMESPACE/KEY` (a namespace is to NabuStore what a bucket is to S3);
directories are key prefixes ending in `/`, as in S3: they exist while a key lies under
them, and `mkdir` creates nothing. Reads pin one version of an object when the file is
opened; ranges are read in parallel (`cat_ranges`); `mv` and `cp` within a namespace are
native (a new key record for the same blob: no bytes move). A file opened for writing is
buffered in memory and stored with one put on close (visible only then, and whole).

Options (`fsspec.filesystem("nabu", cluster=...)`, or `storage_options`): `cluster`, a
`cluster.toml` path or a node's management address (default as the `nabu` commands).
"""

from __future__ import annotations

import mmap
import os
from datetime import datetime, timezone
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from . import Client
from .errors import NotFound


#: Bytes `get_file` reads into memory at a time.
GET_FILE_CHUNK_BYTES = 64 << 20


class _Borrowed:
    """A caller's open file as a context manager that leaves it open."""

    def __init__(self, file: Any):
        self.file = file

    def __enter__(self) -> Any:
        return self.file

    def __exit__(self, *exc: Any) -> None:
        return None


def _entry(namespace: str, info: Any) -> dict[str, Any]:
    return {
        "name": f"{namespace}/{info.key}",
        "size": info.size,
        "type": "file",
        "blob_id": info.blob_id,
        "modified": info.modified,
        "metadata": dict(info.metadata),
    }


def _directory(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


class NabuFileSystem(AbstractFileSystem):
    """NabuStore through fsspec (see the module docs)."""

    protocol = ("nabu",)
    root_marker = ""
    cachable = True

    def __init__(self, cluster: str | None = None, tcp: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self._client = Client(cluster, tcp=tcp)
        self._clients: dict[str, Client] = {}

    def client(self, namespace: str) -> Client:
        """The client of `namespace` (all share one set of connections)."""
        if namespace not in self._clients:
            self._clients[namespace] = self._client.with_namespace(namespace)
        return self._clients[namespace]

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("nabu://"):
            path = path[len("nabu://") :]
        return path.strip("/")

    def _split(self, path: str) -> tuple[str, str]:
        path = self._strip_protocol(path)
        namespace, _, key = path.partition("/")
        return namespace, key

    def _keyed(self, path: str) -> tuple[Client, str, str]:
        namespace, key = self._split(path)
        if not namespace or not key:
            raise IsADirectoryError(f"{path!r} names a namespace, not an object")
        return self.client(namespace), namespace, key

    # Listing.

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        namespace, key = self._split(path)
        if not namespace:
            entries = [_directory(name) for name in self._client.namespaces()]
        else:
            entries = self._children(namespace, key)
            if not entries and key:
                entries = [self.info(path)]
        return entries if detail else [entry["name"] for entry in entries]

    def _children(self, namespace: str, key: str) -> list[dict[str, Any]]:
        """The files and directories right under `namespace/key`."""
        client = self.client(namespace)
        prefix = f"{key}/" if key else ""
        files, directories = [], []
        for listed in client.ls(prefix):
            rest = listed[len(prefix) :]
            head, slash, _ = rest.partition("/")
            if slash:
                name = f"{namespace}/{prefix}{head}"
                if not directories or directories[-1] != name:
                    directories.append(name)
            elif rest:
                files.append(listed)
        entries = [_directory(name) for name in directories]
        for info in client.stat_many(files):
            if info is not None:
                entries.append(_entry(namespace, info))
        return sorted(entries, key=lambda entry: entry["name"])

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        namespace, key = self._split(path)
        if not namespace:
            return _directory("")
        if not key:
            if namespace in self._client.namespaces():
                return _directory(namespace)
            raise FileNotFoundError(path)
        client = self.client(namespace)
        try:
            return _entry(namespace, client.stat(key))
        except NotFound:
            pass
        if client.ls(f"{key}/"):
            return _directory(f"{namespace}/{key}")
        raise FileNotFoundError(path)

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        namespace, key = self._split(path)
        if not namespace or maxdepth is not None:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        client = self.client(namespace)
        prefix = f"{key}/" if key else ""
        keys = client.ls(prefix)
        out: dict[str, dict[str, Any]] = {}
        if key:
            try:
                out[f"{namespace}/{key}"] = _entry(namespace, client.stat(key))
            except NotFound:
                if withdirs and keys:
                    out[f"{namespace}/{key}"] = _directory(f"{namespace}/{key}")
        if withdirs:
            for listed in keys:
                parts = listed[len(prefix) :].split("/")[:-1]
                for depth in range(1, len(parts) + 1):
                    name = f"{namespace}/{prefix}{'/'.join(parts[:depth])}"
                    out.setdefault(name, _directory(name))
        for info in client.stat_many(keys):
            if info is not None:
                out[f"{namespace}/{info.key}"] = _entry(namespace, info)
        names = sorted(out)
        return {name: out[name] for name in names} if detail else names

    # Reading.

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> "NabuFile":
        if mode == "xb" and self.exists(path):
            raise FileExistsError(path)
        return NabuFile(
            self,
            path,
            mode="wb" if mode == "xb" else mode,
            block_size=block_size or self.blocksize,
            autocommit=autocommit,
            cache_options=cache_options,
            **kwargs,
        )

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        client, _, key = self._keyed(path)
        try:
            if start is None and end is None:
                return client.get(key)
            start, end = self._absolute(client, key, start, end)
            return client.get_range(key, start, end)
        except NotFound as error:
            raise FileNotFoundError(path) from error

    def _absolute(self, client: Client, key: str, start: int | None, end: int | None) -> tuple[int, int]:
        """`start` and `end` with negative values counted from the object's end."""
        if (start or 0) < 0 or (end is not None and end < 0) or end is None:
            size = client.stat(key).size
            start = start or 0
            start = max(size + start, 0) if start < 0 else start
            end = size if end is None else (max(size + end, 0) if end < 0 else end)
        return start or 0, max(end, start or 0)

    def cat_ranges(
        self,
        paths: list[str],
        starts: Any,
        ends: Any,
        max_gap: Any = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        count = len(paths)
        starts = starts if isinstance(starts, list) else [starts] * count
        ends = ends if isinstance(ends, list) else [ends] * count
        if len(starts) != count or len(ends) != count:
            raise ValueError("paths, starts and ends must be equally long")
        results: list[Any] = [None] * count
        groups: dict[str, list[tuple[int, str, int, int]]] = {}
        for index, (path, start, end) in enumerate(zip(paths, starts, ends)):
            try:
                client, namespace, key = self._keyed(path)
                start, end = self._absolute(client, key, start, end)
                groups.setdefault(namespace, []).append((index, key, start, end))
            except Exception as error:  # noqa: BLE001 (returned or raised, as asked)
                if on_error != "return":
                    raise FileNotFoundError(path) from error
                results[index] = FileNotFoundError(path)
        for namespace, group in groups.items():
            client = self.client(namespace)
            try:
                parts = client.get_ranges([g[1] for g in group], [g[2] for g in group], [g[3] for g in group])
                for (index, *_), part in zip(group, parts):
                    results[index] = part
            except Exception:
                # One failed: read them one by one, so each gets its own answer.
                for index, key, start, end in group:
                    try:
                        results[index] = client.get_range(key, start, end)
                    except Exception as error:  # noqa: BLE001
                        if on_error != "return":
                            raise
                        results[index] = error
        return results

    def get_file(self, rpath: str, lpath: str, callback: Any = None, outfile: Any = None, **kwargs: Any) -> None:
        if self.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        client, _, key = self._keyed(rpath)
        if outfile is None:
            parent = os.path.dirname(lpath)
            if parent:
                os.makedirs(parent, exist_ok=True)
        try:
            reader = client.open(key)
        except NotFound as error:
            raise FileNotFoundError(rpath) from error
        with reader, (open(lpath, "wb") if outfile is None else _Borrowed(outfile)) as out:
            # Read a slice at a time into one reused buffer, then write it out.
            view = memoryview(bytearray(min(reader.size, GET_FILE_CHUNK_BYTES)))
            offset = 0
            while offset < reader.size:
                written = reader.read_into_at(offset, view)
                out.write(view[:written])
                offset += written

    # Writing.

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        client, _, key = self._keyed(path)
        if mode == "create" and client.exists(key):
            raise FileExistsError(path)
        client.put(key, value)
        self.invalidate_cache(path)

    def put_file(self, lpath: str, rpath: str, callback: Any = None, mode: str = "overwrite", **kwargs: Any) -> None:
        if os.path.isdir(lpath):
            return
        client, _, key = self._keyed(rpath)
        if mode == "create" and client.exists(key):
            raise FileExistsError(rpath)
        with open(lpath, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                client.put(key, b"")
            else:
                # The put reads the page cache through the mapping: no copy in Python.
                with mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) as mapped:
                    client.put(key, mapped)
        self.invalidate_cache(rpath)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories are key prefixes: nothing to create."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Directories are key prefixes: nothing to create."""

    def rmdir(self, path: str) -> None:
        """A directory vanishes with its last key: nothing to remove."""

    def rm_file(self, path: str) -> None:
        client, _, key = self._keyed(path)
        client.delete(key)
        self.invalidate_cache(path)

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        paths = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        by_namespace: dict[str, list[str]] = {}
        for found in paths:
            namespace, key = self._split(found)
            if key and self.isfile(found):
                by_namespace.setdefault(namespace, []).append(key)
        for namespace, keys in by_namespace.items():
            self.client(namespace).delete_many(keys)
        self.invalidate_cache()

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        namespace1, key1 = self._split(path1)
        namespace2, key2 = self._split(path2)
        if self.isdir(path1):
            return
        if namespace1 == namespace2:
            self.client(namespace1).copy(key1, key2)
        else:
            self.client(namespace2).put(key2, self.client(namespace1).get(key1))
        self.invalidate_cache(path2)

    def mv(self, path1: Any, path2: Any, recursive: bool = False, maxdepth: int | None = None, **kwargs: Any) -> None:
        if isinstance(path1, str) and isinstance(path2, str) and not recursive:
            namespace1, key1 = self._split(path1)
            namespace2, key2 = self._split(path2)
            if namespace1 == namespace2 and key1 and key2 and self.isfile(path1):
                if self.isdir(path2):
                    key2 = f"{key2}/{key1.rsplit('/', 1)[-1]}"
                self.client(namespace1).rename(key1, key2)
                self.invalidate_cache()
                return
        super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)

    def rename(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.mv(path1, path2, **kwargs)

    def modified(self, path: str) -> datetime:
        return datetime.fromtimestamp(self.info(path)["modified"], tz=timezone.utc)

    def created(self, path: str) -> datetime:
        return self.modified(path)

    def ukey(self, path: str) -> str:
        return self.info(path)["blob_id"]

    def checksum(self, path: str) -> int:
        return int(self.ukey(path)[:16], 16)


class NabuFile(AbstractBufferedFile):
    """A file of `nabu://`: reads pin the version current when opened; writes are
    buffered and stored with one put on close."""

    def __init__(self, fs: NabuFileSystem, path: str, mode: str = "rb", **kwargs: Any):
        client, _, key = fs._keyed(path)
        self._client, self._key = client, key
        self._reader = None
        self._chunks: list[bytes] = []
        if mode == "rb":
            try:
                self._reader = client.open(key)
            except NotFound as error:
                raise FileNotFoundError(path) from error
            kwargs["size"] = self._reader.size
        super().__init__(fs, path, mode=mode, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self._reader.read_at(start, end - start)

    def _initiate_upload(self) -> None:
        self._chunks = []

    def _upload_chunk(self, final: bool = False) -> bool:
        self._chunks.append(self.buffer.getvalue())
        if final:
            data = b"".join(self._chunks)
            self._chunks = []
            self._client.put(self._key, data)
            self.fs.invalidate_cache(self.path)
        return True
