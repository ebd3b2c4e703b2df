"""Type stubs of `nabustore.filesystem`: `nabu://` as an fsspec filesystem (paths are
`nabu://NAMESPACE/KEY`; directories are key prefixes, as in S3)."""

from datetime import datetime
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from . import Client

GET_FILE_CHUNK_BYTES: int

class NabuFileSystem(AbstractFileSystem):
    """NabuStore through fsspec: `fsspec.filesystem("nabu", cluster=...)`, where `cluster` is a
    `cluster.toml` path or a node's management address (default as the `nabu` commands)."""

    protocol: tuple[str, ...]
    root_marker: str
    cachable: bool
    def __init__(self, cluster: str | None = None, tcp: bool = False, **kwargs: Any) -> None: ...
    def client(self, namespace: str) -> Client:
        """The client of `namespace` (all share one set of connections)."""
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any: ...
    # Listing.
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]: ...
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]: ...
    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any: ...
    # Reading.
    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> NabuFile: ...
    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes: ...
    def cat_ranges(
        self,
        paths: list[str],
        starts: Any,
        ends: Any,
        max_gap: Any = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        """Each range as bytes, read in parallel per namespace (with `on_error="return"`, a
        failed one is its exception)."""
    def get_file(
        self, rpath: str, lpath: str, callback: Any = None, outfile: Any = None, **kwargs: Any
    ) -> None: ...
    # Writing.
    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None: ...
    def put_file(
        self, lpath: str, rpath: str, callback: Any = None, mode: str = "overwrite", **kwargs: Any
    ) -> None: ...
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None: ...
    def makedirs(self, path: str, exist_ok: bool = False) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def rm_file(self, path: str) -> None: ...
    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None: ...
    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Within a namespace, native: the same blob under the new key (no bytes move)."""
    def mv(
        self,
        path1: Any,
        path2: Any,
        recursive: bool = False,
        maxdepth: int | None = None,
        **kwargs: Any,
    ) -> None:
        """One file within a namespace: the native rename (no bytes move)."""
    def rename(self, path1: str, path2: str, **kwargs: Any) -> None: ...
    def modified(self, path: str) -> datetime: ...
    def created(self, path: str) -> datetime: ...
    def ukey(self, path: str) -> str:
        """The object's blob id (BLAKE3 of its bytes)."""
    def checksum(self, path: str) -> int: ...

class NabuFile(AbstractBufferedFile):
    """A file of `nabu://`: reads pin the version current when opened; writes are buffered
    and stored with one put on close."""

    def __init__(self, fs: NabuFileSystem, path: str, mode: str = "rb", **kwargs: Any) -> None: ...
