"""Zero-copy reads into numpy and safetensors loading."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

import nabustore
from conftest import record, recorded

#: Every byte-sized safetensors dtype (all but the sub-byte `SUB_BYTE_DTYPES`), as numpy
#: dtypes.
DTYPES = {
    "BOOL": np.dtype(bool),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "F32": np.dtype(np.float32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F64": np.dtype(np.float64),
    "C64": np.dtype(np.complex64),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
}
#: The sub-byte safetensors dtypes (bits per value): refused.
SUB_BYTE_DTYPES = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


def random_tensor(rng, dtype, shape):
    """Random bits of `dtype` (every bit pattern of floats included, NaNs too; booleans 0/1)."""
    if dtype == np.dtype(bool):
        return rng.integers(0, 2, shape).astype(bool)
    count = int(np.prod(shape)) * dtype.itemsize
    return np.frombuffer(rng.bytes(count), dtype=dtype).reshape(shape).copy()


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_get_into_writes_the_callers_memory(client, prefix):
    data = np.random.default_rng(2).integers(0, 256, (9 << 20) + 7, dtype=np.uint8)
    client.put(prefix + "v", data)
    target = np.full(data.size + 200, 0xEE, dtype=np.uint8)
    window = target[100 : 100 + data.size]
    address = window.__array_interface__["data"][0]
    assert client.get_into(prefix + "v", window) == data.size
    assert window.__array_interface__["data"][0] == address
    assert np.shares_memory(window, target)
    assert np.array_equal(window, data)
    assert (target[:100] == 0xEE).all() and (target[-100:] == 0xEE).all()
    # An offset into the object, a buffer longer than what is left, other buffer kinds.
    tail = bytearray(100)
    assert client.get_into(prefix + "v", tail, offset=data.size - 10) == 10
    assert bytes(tail[:10]) == data[-10:].tobytes() and not any(tail[10:])
    view = memoryview(bytearray(4096))
    assert client.get_into(prefix + "v", view, offset=4 << 20) == 4096
    assert view.tobytes() == data[4 << 20 : (4 << 20) + 4096].tobytes()
    floats = np.zeros(16, dtype=np.float32)
    assert client.get_into(prefix + "v", floats) == 64
    assert floats.tobytes() == data[:64].tobytes()


GIB = 1 << 30

MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import nabustore

    def vm_hwm():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

    cluster, key, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = nabustore.Client(cluster)
    target = np.empty(size, dtype=np.uint8)
    target.fill(0)  # resident before the baseline
    address = target.ctypes.data
    before = vm_hwm()
    written = client.get_into(key, target)
    after = vm_hwm()
    expected = np.arange(size // 4, dtype=np.uint32).view(np.uint8)
    print(json.dumps({
        "written": written,
        "address_kept": target.ctypes.data == address,
        "equal": bool(np.array_equal(target, expected)),
        "before": before,
        "after": after,
    }))
    """
)


def test_get_into_a_1_gib_value_adds_under_10_percent_of_it_to_peak_memory(client, prefix, cluster_file, tmp_path):
    """In a fresh process, the peak resident set (VmHWM) while 1 GiB lands in a numpy array
    grows by less than 10% of 1 GiB: no second copy of the value exists at any time."""
    value = np.arange(GIB // 4, dtype=np.uint32).view(np.uint8)
    client.put(prefix + "gib", value)
    del value
    script = tmp_path / "probe.py"
    script.write_text(MEMORY_PROBE)
    result = subprocess.run(
        [sys.executable, str(script), cluster_file, prefix + "gib", str(GIB)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    growth = report["after"] - report["before"]
    print(f"peak memory grew by {growth / (1 << 20):.1f} MiB while reading 1 GiB")
    assert report["written"] == GIB
    assert report["address_kept"] and report["equal"]
    assert growth < GIB // 10, f"peak memory grew by {growth} bytes"
    client.delete(prefix + "gib")


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_every_safetensors_dtype_round_trips(client, prefix, name):
    rng = np.random.default_rng(len(name))
    dtype = DTYPES[name]
    tensors = {
        "matrix": random_tensor(rng, dtype, (33, 17)),
        "scalar": random_tensor(rng, dtype, ()),
        "empty": random_tensor(rng, dtype, (0, 4)),
        "cube": random_tensor(rng, dtype, (4, 5, 6)),
    }
    client.save_safetensors(prefix + "t", tensors, metadata={"dtype": name})
    loaded, metadata = client.load_safetensors_with_metadata(prefix + "t")
    assert metadata == {"dtype": name}
    assert set(loaded) == set(tensors)
    for key, tensor in tensors.items():
        assert same_bits(loaded[key], tensor), key


def test_a_file_written_by_the_safetensors_package_loads_identically(client, prefix, tmp_path):
    rng = np.random.default_rng(3)
    tensors = {
        f"layer.{i}.{name}": random_tensor(rng, dtype, (i + 1, 3 * i + 2))
        for i, (name, dtype) in enumerate(DTYPES.items())
    }
    tensors["big"] = random_tensor(rng, np.dtype(np.float32), (1024, 3000))
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(tensors, str(path), metadata={"format": "np"})
    client.put(prefix + "model.safetensors", path.read_bytes())
    loaded, metadata = client.load_safetensors_with_metadata(prefix + "model.safetensors")
    with safe_open(str(path), framework="numpy") as reference:
        assert metadata == reference.metadata()
        assert sorted(loaded) == sorted(reference.keys())
    for key, tensor in tensors.items():
        assert same_bits(loaded[key], tensor), key
    # The package's own numpy loader reads the numpy-native dtypes: the same arrays.
    native = {k: v for k, v in tensors.items() if not k.endswith(("BF16", "E4M3", "E5M2", "E8M0", "FNUZ"))}
    plain = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file(native, str(plain))
    client.put(prefix + "plain.safetensors", plain.read_bytes())
    ours = client.load_safetensors(prefix + "plain.safetensors")
    theirs = safetensors.numpy.load_file(str(plain))
    assert sorted(ours) == sorted(theirs) and len(theirs) >= 14
    for key, tensor in theirs.items():
        assert same_bits(ours[key], tensor), key


def test_the_dtype_list_is_the_safetensors_packages(tmp_path):
    """`DTYPES` and `SUB_BYTE_DTYPES` are every dtype the pinned `safetensors` package
    writes: each byte-sized one read back from a file it wrote, with its own name."""
    import ml_dtypes as ml

    rng = np.random.default_rng(7)
    for name, dtype in DTYPES.items():
        path = tmp_path / f"{name}.safetensors"
        safetensors.numpy.save_file({"x": random_tensor(rng, dtype, (3, 2))}, str(path))
        with open(path, "rb") as file:
            length = int.from_bytes(file.read(8), "little")
            assert json.loads(file.read(length))["x"]["dtype"] == name
    assert nabustore.safetensors.SUB_BYTE_DTYPES == SUB_BYTE_DTYPES
    # The package's Rust core names its dtypes in its error for an unknown numpy dtype.
    with pytest.raises(Exception) as unknown:
        safetensors.numpy.save({"x": np.zeros(2, dtype=ml.int4)})
    named = {
        name
        for name in str(unknown.value).split(": ", 1)[1].replace(" ", "").split(",")
        if name != "float4_e2m1fn_x2"  # F4, two values to a byte (torch's)
    }
    assert named == {dtype.name for dtype in DTYPES.values()}


def packed_file(name, bits):
    """A safetensors file with an F32 tensor and a tensor of the sub-byte dtype `name` (2x8
    values), laid out as the format says: `F4` as the `safetensors` package writes it, the
    F6 types by hand (the package can write them only from torch)."""
    from safetensors import TensorSpec, serialize

    packed = np.arange(2 * 8 * bits // 8, dtype=np.uint8)
    plain = np.arange(4, dtype=np.float32)
    if name == "F4":
        return bytes(
            serialize(
                {
                    "plain": TensorSpec(dtype="float32", shape=(4,), data_ptr=plain.ctypes.data, data_len=plain.nbytes),
                    "packed": TensorSpec(
                        dtype="float4_e2m1fn_x2", shape=(2, 4), data_ptr=packed.ctypes.data, data_len=packed.nbytes
                    ),
                }
            )
        )
    header = {
        "packed": {"dtype": name, "shape": [2, 8], "data_offsets": [0, packed.nbytes]},
        "plain": {"dtype": "F32", "shape": [4], "data_offsets": [packed.nbytes, packed.nbytes + 16]},
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + packed.tobytes() + plain.tobytes()


@pytest.mark.parametrize("name", sorted(SUB_BYTE_DTYPES))
def test_a_sub_byte_dtype_is_refused_with_a_clear_error(client, prefix, name):
    data = packed_file(name, SUB_BYTE_DTYPES[name])
    # A valid file: the `safetensors` package reads its header.
    tensors = dict(safetensors.deserialize(data))
    assert (tensors["packed"]["dtype"], tensors["packed"]["shape"]) == (name, [2, 8])
    client.put(prefix + name, data)
    message = (
        f"tensor 'packed': safetensors dtype {name} is not supported: it packs "
        f"{SUB_BYTE_DTYPES[name]}-bit values several to a byte, which a numpy array cannot view"
    )
    with pytest.raises(nabustore.InvalidArgument, match=message):
        client.load_safetensors(prefix + name)
    with pytest.raises(nabustore.InvalidArgument, match=f"dtype {name} is not supported"):
        nabustore.safetensors.numpy_dtype(name)


def test_tensors_are_views_into_one_buffer(client, prefix):
    tensors = {"a": np.ones((100, 100), np.float32), "b": np.zeros(77, np.int64)}
    client.save_safetensors(prefix + "v", tensors)
    loaded = client.load_safetensors(prefix + "v")
    assert loaded["a"].base is not None and loaded["b"].base is not None
    assert np.shares_memory(loaded["a"].base, loaded["b"].base)
    assert loaded["a"].base is loaded["b"].base


def test_a_header_larger_than_the_first_read_and_bad_files(client, prefix):
    tensors = {f"a.very.long.tensor.name.{i:05}": np.full(2, i, np.int32) for i in range(2000)}
    client.save_safetensors(prefix + "wide", tensors)
    header = json.dumps({k: 0 for k in tensors})
    assert len(header) > nabustore.safetensors.HEADER_PROBE_BYTES
    loaded = client.load_safetensors(prefix + "wide")
    assert all(np.array_equal(loaded[k], v) for k, v in tensors.items())
    client.put(prefix + "bad", b"\xff" * 16)
    with pytest.raises(nabustore.InvalidArgument, match="not a safetensors file"):
        client.load_safetensors(prefix + "bad")
    client.put(prefix + "bad-json", (8).to_bytes(8, "little") + b"{notjson")
    with pytest.raises(nabustore.InvalidArgument, match="JSON"):
        client.load_safetensors(prefix + "bad-json")
    with pytest.raises(nabustore.NotFound):
        client.load_safetensors(prefix + "missing")


def test_a_model_stored_for_the_degraded_phase(client, state_dir):
    """Stores a 40 MiB safetensors object (ten stripes) the degraded phase loads."""
    rng = np.random.default_rng(4)
    tensors = {f"w{i}": random_tensor(rng, np.dtype(np.float32), (1024, 1024)) for i in range(10)}
    tensors["bf16"] = random_tensor(rng, DTYPES["BF16"], (999, 7))
    client.save_safetensors("degraded/model.safetensors", tensors)
    record(
        state_dir,
        "model",
        {name: hashlib.sha256(t.tobytes()).hexdigest() for name, t in tensors.items()},
    )


@pytest.mark.degraded
def test_a_model_loads_with_two_of_six_nodes_killed(client, state_dir):
    expected = recorded(state_dir, "model")
    loaded = client.load_safetensors("degraded/model.safetensors")
    assert {name: hashlib.sha256(t.tobytes()).hexdigest() for name, t in loaded.items()} == expected
    assert os.environ.get("NABU_PY_KILLED") == "2,5"
