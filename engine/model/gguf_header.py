"""Reading a GGUF file's header: its metadata and each tensor's type and shape, no tensor data.

We read the header ourselves because ``mx.load`` fails with a bare "gguf_tensor_to_f16 failed"
on types it cannot read (and turns BF16 into float16 without a word), while a user needs to hear
which tensor has which type; the metadata also carries the config and tokenizer MLX ignores.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

from engine.errors import UserError


class _Cursor:
    """Sequential little-endian reads from the start of a GGUF file."""

    SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    FLOAT32, STRING, ARRAY = 6, 8, 9

    def __init__(self, buffer):
        self.buffer, self.pos = buffer, 0

    def read(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buffer, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def scalar(self, fmt: str):
        return self.read(fmt)[0]

    def left(self, count: int) -> int:
        """``count``, if that many bytes (at least) are left; else the header is cut short."""
        if count > len(self.buffer) - self.pos:
            raise struct.error("a length runs past the end of the file")
        return count

    def string(self) -> str:
        size = self.left(self.scalar("Q"))
        self.pos += size
        return bytes(self.buffer[self.pos - size : self.pos]).decode("utf-8", errors="replace")

    def value(self, kind: int):
        if kind == self.STRING:
            return self.string()
        if kind == self.ARRAY:
            item_kind, count = self.scalar("I"), self.scalar("Q")
            self.left(count)  # every item takes a byte at least: a count of 2**60 is a broken file
            if item_kind in self.SCALARS:
                return list(self.read(f"{count}{self.SCALARS[item_kind]}"))
            return [self.value(item_kind) for _ in range(count)]
        if kind == self.FLOAT32:
            # The shortest decimal naming the same float32: config.json then says 1e-05,
            # not 9.999999747378752e-06.
            return float(str(np.float32(self.scalar("f"))))
        if kind in self.SCALARS:
            return self.scalar(self.SCALARS[kind])
        raise ValueError(f"unknown metadata value type {kind}")


def read_header(path: Path) -> tuple[dict, dict[str, tuple[int, tuple[int, ...]]]]:
    """The file's metadata and each tensor's (ggml type id, shape), without loading tensors.

    Shapes are row-major, as MLX and numpy give them (GGUF lists the fastest axis first).
    """
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            cursor = _Cursor(buffer)
            if buffer[:4] != b"GGUF":
                raise UserError(f"{path}: not a GGUF file")
            cursor.pos = 4
            version, tensor_count, kv_count = cursor.read("IQQ")
            if version not in (2, 3):
                raise UserError(f"{path}: GGUF version {version} is not supported (only 2 and 3)")
            metadata = {}
            for _ in range(kv_count):
                key = cursor.string()
                metadata[key] = cursor.value(cursor.scalar("I"))
            tensors = {}
            for _ in range(tensor_count):
                name = cursor.string()
                dims = cursor.read(f"{cursor.scalar('I')}Q")
                kind, _offset = cursor.read("IQ")
                tensors[name] = (kind, dims[::-1])
    except struct.error:
        raise UserError(f"{path}: the GGUF header is cut short (an incomplete download?)") from None
    except RecursionError:
        raise UserError(f"{path}: not a readable GGUF file (metadata arrays nested too deeply)") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:  # an empty file (mmap refuses it) or an unknown metadata type
        raise UserError(f"{path}: not a readable GGUF file ({e})") from None
    return metadata, tensors
