"""`nabu://` through fsspec: its own generic test suites (open, pipe, copy, get, put) and
the calls tools lean on (ls, info, open, cat_ranges, rename, rm, find)."""

import importlib.metadata
import posixpath
import uuid

import fsspec
import numpy as np
import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from nabustore.filesystem import NabuFileSystem


@pytest.fixture(scope="session")
def nabu_fs(cluster_file):
    return fsspec.filesystem("nabu", cluster=cluster_file)


class NabuFixtures(AbstractFixtures):
    @pytest.fixture
    def fs(self, nabu_fs):
        return nabu_fs

    @pytest.fixture
    def fs_path(self):
        return f"default/fsspec-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def fs_join(self):
        return posixpath.join

    @pytest.fixture
    def supports_empty_directories(self):
        # Directories are key prefixes, as in S3.
        return False


class TestNabuOpen(AbstractOpenTests, NabuFixtures):
    pass


class TestNabuPipe(AbstractPipeTests, NabuFixtures):
    pass


class TestNabuCopy(AbstractCopyTests, NabuFixtures):
    pass


class TestNabuGet(AbstractGetTests, NabuFixtures):
    pass


class TestNabuPut(AbstractPutTests, NabuFixtures):
    pass


def test_the_entry_point_registers_nabu():
    names = {entry.name: entry.value for entry in importlib.metadata.entry_points(group="fsspec.specs")}
    assert names["nabu"] == "nabustore.filesystem:NabuFileSystem"
    assert fsspec.get_filesystem_class("nabu") is NabuFileSystem


def test_ls_info_open_cat_ranges_rename_rm(nabu_fs, prefix):
    base = f"default/{prefix.rstrip('/')}"
    data = np.random.default_rng(5).integers(0, 256, 6 << 20, dtype=np.uint8).tobytes()
    nabu_fs.pipe_file(f"{base}/dir/big.bin", data)
    nabu_fs.pipe_file(f"{base}/dir/sub/small.txt", b"hello")
    nabu_fs.pipe_file(f"nabu://{base}/top.txt", b"top")

    assert nabu_fs.ls(base, detail=False) == [f"{base}/dir", f"{base}/top.txt"]
    listing = {e["name"]: e for e in nabu_fs.ls(f"{base}/dir")}
    assert listing[f"{base}/dir/big.bin"]["size"] == len(data)
    assert listing[f"{base}/dir/sub"]["type"] == "directory"
    assert nabu_fs.info(f"{base}/dir")["type"] == "directory"
    info = nabu_fs.info(f"{base}/dir/big.bin")
    assert (info["type"], info["size"], len(info["blob_id"])) == ("file", len(data), 64)
    assert nabu_fs.isfile(f"{base}/top.txt") and not nabu_fs.exists(f"{base}/nope")
    with pytest.raises(FileNotFoundError):
        nabu_fs.info(f"{base}/nope")
    assert nabu_fs.find(base) == [f"{base}/dir/big.bin", f"{base}/dir/sub/small.txt", f"{base}/top.txt"]
    assert nabu_fs.du(base) == len(data) + 8

    with nabu_fs.open(f"{base}/dir/big.bin", "rb") as file:
        file.seek(5 << 20)
        assert file.read(100) == data[5 << 20 : (5 << 20) + 100]
    with fsspec.open(f"nabu://{base}/dir/sub/small.txt", "rt", cluster=nabu_fs._client.cluster) as text:
        assert text.read() == "hello"
    assert nabu_fs.cat_file(f"{base}/dir/big.bin", start=-4) == data[-4:]

    starts = [0, 4 << 20, 10, 1]
    ends = [10, (4 << 20) + 5, 20, 3]
    paths = [f"{base}/dir/big.bin"] * 3 + [f"{base}/dir/sub/small.txt"]
    assert nabu_fs.cat_ranges(paths, starts, ends) == [data[0:10], data[4 << 20 : (4 << 20) + 5], data[10:20], b"el"]
    mixed = nabu_fs.cat_ranges([f"{base}/top.txt", f"{base}/missing"], [0, 0], [3, 3])
    assert mixed[0] == b"top" and isinstance(mixed[1], FileNotFoundError)

    blob_id = info["blob_id"]
    nabu_fs.mv(f"{base}/dir/big.bin", f"{base}/moved.bin")
    assert nabu_fs.info(f"{base}/moved.bin")["blob_id"] == blob_id
    assert not nabu_fs.exists(f"{base}/dir/big.bin")
    nabu_fs.rename(f"{base}/dir", f"{base}/renamed", recursive=True)
    assert nabu_fs.cat(f"{base}/renamed/sub/small.txt") == b"hello"
    assert not nabu_fs.exists(f"{base}/dir")

    nabu_fs.rm(base, recursive=True)
    assert nabu_fs.find(base) == []


def test_writing_through_open_is_visible_only_on_close(nabu_fs, prefix):
    path = f"default/{prefix}written.bin"
    file = nabu_fs.open(path, "wb", block_size=5 << 20)
    file.write(b"a" * (6 << 20))
    assert not nabu_fs.exists(path)
    file.write(b"b" * 10)
    file.close()
    assert nabu_fs.cat(path) == b"a" * (6 << 20) + b"b" * 10
