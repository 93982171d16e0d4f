"""Read a ``.safetensors`` file into numpy arrays, with no ``safetensors`` or ``torch``.

The format: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
(``{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{...}}``), then the tensor bytes, offsets counted from the end of the header.
The file is memory-mapped, so loading is instant and a tensor's pages are read
only when it is used.

>>> weights = load_safetensors("/models/tiny/model-00001-of-00001.safetensors")  # doctest: +SKIP
>>> {name: (w.dtype, w.shape) for name, w in weights.items()}  # doctest: +SKIP
"""

from __future__ import annotations

import json
import mmap
import os
import struct

import numpy as np

__all__ = ["load_safetensors", "load_safetensors_folder"]

# safetensors dtype -> numpy dtype (little-endian, as the format stores them).
_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
_MAX_HEADER = 100 * 2**20  # the reference implementation's limit


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Map ``path`` and return its tensors by name (read-only views of the file).

    ``BF16`` tensors, which numpy has no dtype for, come back as ``float32``
    (exact: a bfloat16 is the upper half of a float32). Raises ``ValueError``
    for a malformed file or an unsupported dtype (the ``F8_*`` kinds).
    """
    with open(path, "rb") as fh:
        buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if len(buffer) < 8:
        raise ValueError(f"{path}: {len(buffer)} bytes is too short for a safetensors file")
    (header_len,) = struct.unpack("<Q", buffer[:8])
    if header_len > min(_MAX_HEADER, len(buffer) - 8):
        raise ValueError(f"{path}: header length {header_len} does not fit in {len(buffer)} bytes")
    header = json.loads(buffer[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if not 0 <= begin <= end <= len(buffer) - base:
            raise ValueError(f"{path}: tensor {name!r} offsets {begin}..{end} lie outside the file")
        tensors[name] = _tensor(buffer, base + begin, end - begin, info["dtype"], shape, f"{path}: {name!r}")
    return tensors


def load_safetensors_folder(folder: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of every ``*.safetensors`` file in ``folder`` (a sharded checkpoint)."""
    tensors: dict[str, np.ndarray] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.endswith(".safetensors") and entry.is_file():
            tensors.update(load_safetensors(entry.path))
    return tensors


def _tensor(buffer: mmap.mmap, offset: int, nbytes: int, dtype: str, shape: tuple[int, ...],
            where: str) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    if dtype == "BF16":
        if nbytes != 2 * count:
            raise ValueError(f"{where}: {nbytes} bytes for shape {shape} of BF16")
        bits = np.frombuffer(buffer, dtype="<u2", count=count, offset=offset)
        return (bits.astype("<u4") << 16).view("<f4").reshape(shape)
    if dtype not in _DTYPES:
        raise ValueError(f"{where}: dtype {dtype} has no numpy equivalent here")
    np_dtype = _DTYPES[dtype]
    if nbytes != np_dtype.itemsize * count:
        raise ValueError(f"{where}: {nbytes} bytes for shape {shape} of {dtype}")
    return np.frombuffer(buffer, dtype=np_dtype, count=count, offset=offset).reshape(shape)
