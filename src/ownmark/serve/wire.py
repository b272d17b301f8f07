"""Tensors on the wire: a small binary format for speed, JSON lists for people and the OpenAPI docs.

The binary format is a 12-byte header and the raw little-endian values::

    b"OWNT" | version (1 byte) | dtype code (1 byte) | ndim (1 byte) | reserved (1 byte)
    | ndim x uint32 sizes (little-endian) | prod(sizes) x itemsize bytes

Nothing is ever unpickled: decoding checks the magic, the dtype, the rank and that the declared
shape accounts for every byte before a tensor is made.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import torch

from ownmark.errors import ShapeError

TENSOR_TYPE = "application/x-ownmark-tensor"
JSON_TYPE = "application/json"
MAGIC, VERSION, MAX_NDIM = b"OWNT", 1, 8
DTYPES: dict[int, torch.dtype] = {1: torch.float32, 2: torch.int64, 3: torch.float64, 4: torch.uint8}
CODES = {dtype: code for code, dtype in DTYPES.items()}
_HEAD = struct.Struct("<4sBBBB")


def encode(x: torch.Tensor) -> bytes:
    """The binary form of a CPU tensor of dtype float32, float64, int64 or uint8.

    Example:
        >>> x = torch.arange(6, dtype=torch.float32).view(2, 3)
        >>> torch.equal(decode(encode(x)), x)
        True
    """
    if x.dtype not in CODES:
        raise ShapeError(f"cannot send a {x.dtype} tensor; use one of {[str(d) for d in CODES]}")
    if x.ndim > MAX_NDIM:
        raise ShapeError(f"cannot send a tensor of {x.ndim} dimensions; at most {MAX_NDIM}")
    values = x.detach().cpu().contiguous().numpy()
    head = _HEAD.pack(MAGIC, VERSION, CODES[x.dtype], x.ndim, 0) + struct.pack(f"<{x.ndim}I", *x.shape)
    return head + values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()


def decode(body: bytes) -> torch.Tensor:
    """The tensor a binary body holds; ShapeError names what is wrong with a malformed one."""
    if len(body) < _HEAD.size:
        raise ShapeError(f"the tensor body has {len(body)} bytes, fewer than its {_HEAD.size}-byte header")
    magic, version, code, ndim, _ = _HEAD.unpack_from(body)
    if magic != MAGIC or version != VERSION:
        raise ShapeError(f"the body is not an ownmark tensor (version {VERSION}); encode it with ownmark.serve.wire")
    if code not in DTYPES:
        raise ShapeError(f"unknown dtype code {code} in the tensor header; known: {sorted(DTYPES)}")
    if ndim > MAX_NDIM:
        raise ShapeError(f"the tensor header declares {ndim} dimensions; at most {MAX_NDIM}")
    start = _HEAD.size + 4 * ndim
    if len(body) < start:
        raise ShapeError("the tensor header is truncated")
    shape = struct.unpack_from(f"<{ndim}I", body, _HEAD.size)
    if 0 in shape:  # an empty tensor of absurd width would pass the byte count and fail deep in the model
        raise ShapeError(f"the tensor header declares shape {tuple(shape)}, which holds no images; send at least one")
    dtype = DTYPES[code]
    size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if len(body) - start != size:
        got = len(body) - start
        raise ShapeError(f"the tensor header declares shape {tuple(shape)} ({size} bytes) but {got} bytes follow")
    native = torch.empty(0, dtype=dtype).numpy().dtype
    values = np.frombuffer(body, dtype=native.newbyteorder("<"), offset=start).astype(native)  # a writable copy
    return torch.from_numpy(values).view(shape)


def from_json(body: bytes) -> torch.Tensor:
    """Images from a JSON body ``{"images": nested lists (N, C, H, W)}``, as float32.

    Example:
        >>> from_json(b'{"images": [[[[0.5]]]]}').shape
        torch.Size([1, 1, 1, 1])
    """
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise ShapeError(f"the body is not valid JSON ({str(err)[:80]})") from None
    if not isinstance(obj, dict) or "images" not in obj:
        raise ShapeError('a JSON query must be an object {"images": [[[[...]]]]} with images (N, C, H, W)')
    try:
        return torch.tensor(obj["images"], dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        reason = str(err).splitlines()[0][:100] if str(err) else type(err).__name__
        raise ShapeError(f"images must be nested lists of numbers (N, C, H, W): {reason}") from None


def to_json(x: torch.Tensor, **extra: Any) -> dict[str, Any]:
    """A JSON-ready answer: the values as nested lists, their shape and dtype, and ``extra``."""
    return {"output": x.tolist(), "shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch."), **extra}
