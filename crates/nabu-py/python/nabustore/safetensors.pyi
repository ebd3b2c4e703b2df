"""Type stubs of `nabustore.safetensors`: the safetensors format for numpy (byte-sized
dtypes; the sub-byte `F4`, `F6_E2M3`, `F6_E3M2` are refused)."""

from typing import Any, Mapping

import numpy as np

#: The sub-byte safetensors dtypes, bits per value (refused).
SUB_BYTE_DTYPES: dict[str, int]
HEADER_BYTES_MAX: int
HEADER_PROBE_BYTES: int
ALIGNMENT_BYTES: int

def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of safetensors dtype `name` (`InvalidArgument` if it has none)."""

def dtype_name(dtype: np.dtype) -> str:
    """The safetensors name of numpy `dtype`."""

def header_length(prefix: bytes, size: int) -> int: ...
def parse_header(header: bytes, data_bytes: int) -> tuple[dict[str, Any], dict[str, str]]: ...
def views(buffer: np.ndarray, tensors: Mapping[str, Any]) -> dict[str, np.ndarray]: ...
def contiguous(array: np.ndarray) -> np.ndarray: ...
def serialize(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytearray: ...
