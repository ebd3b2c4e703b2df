"""The safetensors format (https://github.com/huggingface/safetensors) for numpy, without
the `safetensors` package: an 8-byte little-endian header length, a JSON header
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}}`, offsets relative to the data
section, optional `"__metadata__"` of strings), then the tensors' bytes, little-endian.

Every byte-sized dtype is supported: `BOOL`, `U8`..`U64`, `I8`..`I64`, `F16`, `F32`, `F64`
and `C64` as numpy's own, and `BF16`, `F8_E4M3`, `F8_E5M2`, `F8_E4M3FNUZ`, `F8_E5M2FNUZ`
and `F8_E8M0` through `ml_dtypes` (installed with `pip install nabustore[ml-dtypes]`).
The sub-byte types (`F4`, `F6_E2M3`, `F6_E3M2`) pack several values per byte, which a
numpy array cannot view; a file holding one is refused with an error naming the tensor.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Mapping

import numpy as np

from .errors import InvalidArgument

#: safetensors dtype name → numpy dtype name (little-endian).
_NUMPY_DTYPES = {
    "BOOL": "bool",
    "U8": "<u1",
    "I8": "<i1",
    "U16": "<u2",
    "I16": "<i2",
    "F16": "<f2",
    "U32": "<u4",
    "I32": "<i4",
    "F32": "<f4",
    "U64": "<u8",
    "I64": "<i8",
    "F64": "<f8",
    "C64": "<c8",
}
#: safetensors dtype name → `ml_dtypes` type name.
_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}
#: The sub-byte safetensors dtypes (bits per value): several values share a byte, which no
#: numpy dtype can view, so they are refused.
SUB_BYTE_DTYPES = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}

#: The longest header accepted (the format's own limit is 100 MB).
HEADER_BYTES_MAX = 100_000_000
#: Bytes read first: the length prefix and, nearly always, the whole header.
HEADER_PROBE_BYTES = 64 << 10
#: Tensors start at multiples of this in the data section `save` writes.
ALIGNMENT_BYTES = 8


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of safetensors dtype `name`."""
    if name in _NUMPY_DTYPES:
        return np.dtype(_NUMPY_DTYPES[name])
    if name in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError as error:
            raise InvalidArgument(
                f"dtype {name} needs ml_dtypes (pip install nabustore[ml-dtypes])"
            ) from error
        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[name]))
    if name in SUB_BYTE_DTYPES:
        raise InvalidArgument(
            f"safetensors dtype {name} is not supported: it packs {SUB_BYTE_DTYPES[name]}-bit "
            "values several to a byte, which a numpy array cannot view (every byte-sized "
            "dtype is supported)"
        )
    raise InvalidArgument(f"safetensors dtype {name} has no numpy representation")


def dtype_name(dtype: np.dtype) -> str:
    """The safetensors name of numpy `dtype`."""
    dtype = np.dtype(dtype)
    for name, numpy_name in _NUMPY_DTYPES.items():
        if dtype == np.dtype(numpy_name):
            return name
    for name, ml_name in _ML_DTYPES.items():
        if dtype.name == ml_name:
            return name
    raise InvalidArgument(f"numpy dtype {dtype} has no safetensors name")


def header_length(prefix: bytes, size: int) -> int:
    """The JSON header's length from the first 8 bytes of a file of `size` bytes."""
    if len(prefix) < 8:
        raise InvalidArgument(f"not a safetensors file: {size} bytes")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > HEADER_BYTES_MAX or 8 + length > size:
        raise InvalidArgument(
            f"not a safetensors file: a header of {length} bytes in {size}"
        )
    return length


def parse_header(header: bytes, data_bytes: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensor table (`{name: (dtype, shape, begin, end)}`) and the metadata of a
    header, every entry checked against the data section's `data_bytes`."""
    try:
        table = json.loads(header)
    except ValueError as error:
        raise InvalidArgument(f"safetensors header is not JSON: {error}") from error
    if not isinstance(table, dict):
        raise InvalidArgument("safetensors header is not a JSON object")
    metadata = table.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in table.items():
        try:
            dtype_text = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidArgument(f"tensor {name!r}: malformed entry {entry!r}") from error
        if not isinstance(dtype_text, str):
            raise InvalidArgument(f"tensor {name!r}: malformed entry {entry!r}")
        try:
            dtype = numpy_dtype(dtype_text)
        except InvalidArgument as error:
            # The dtype's own reason (sub-byte, ml_dtypes missing, unknown), with the tensor.
            raise InvalidArgument(f"tensor {name!r}: {error}") from error
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end <= data_bytes or end - begin != count * dtype.itemsize:
            raise InvalidArgument(
                f"tensor {name!r}: offsets {begin}..{end} do not fit {shape} of "
                f"{entry['dtype']} in a data section of {data_bytes} bytes"
            )
        tensors[name] = (dtype, shape, begin, end)
    return tensors, metadata


def views(buffer: np.ndarray, tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each tensor as a numpy view into `buffer` (the data section), no copy."""
    out = {}
    for name, (dtype, shape, begin, end) in tensors.items():
        count = (end - begin) // dtype.itemsize if dtype.itemsize else 0
        out[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=begin).reshape(shape)
    return out


def contiguous(array: np.ndarray) -> np.ndarray:
    """`array` in C order (a copy only if it is not already; 0-d arrays stay 0-d, unlike
    with `numpy.ascontiguousarray`)."""
    array = np.asarray(array)
    return array if array.flags.c_contiguous else array.copy(order="C")


def serialize(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytearray:
    """The safetensors bytes of `tensors` (in one buffer, ready to put)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays = {}
    offset = 0
    for name, array in tensors.items():
        array = contiguous(array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        arrays[name] = (offset, array)
        header[name] = {
            "dtype": dtype_name(array.dtype),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        offset += -offset % ALIGNMENT_BYTES
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % ALIGNMENT_BYTES)
    start = 8 + len(text)
    out = bytearray(start + offset)
    out[:8] = struct.pack("<Q", len(text))
    out[8:start] = text
    view = memoryview(out)
    for begin, array in arrays.values():
        view[start + begin : start + begin + array.nbytes] = array.reshape(-1).view(np.uint8)
    return out
