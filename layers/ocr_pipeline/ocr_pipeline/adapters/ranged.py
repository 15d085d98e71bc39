"""A seekable, read-only file over an object read in ranges, with a small block cache.

PDF and TIFF readers jump around a file (trailer, cross-reference table, one page's
objects). Reading through this keeps memory bounded by the cache, not by the document,
so counting or rendering one page of a 2,000-page PDF does not download all of it.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_BLOCK_BYTES = 1024 * 1024
DEFAULT_CACHED_BLOCKS = 16

FetchRange = Callable[[int, int], bytes]  # (first byte, last byte inclusive) -> bytes


class RangedReader(io.RawIOBase):
    def __init__(
        self,
        size: int,
        fetch: FetchRange,
        *,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        cached_blocks: int = DEFAULT_CACHED_BLOCKS,
    ) -> None:
        super().__init__()
        self._size = size
        self._fetch = fetch
        self._block = block_bytes
        self._capacity = cached_blocks
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._position = 0
        self.fetches = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self._position = target
        return target

    def _block_at(self, index: int) -> bytes:
        block = self._cache.get(index)
        if block is not None:
            self._cache.move_to_end(index)
            return block
        start = index * self._block
        end = min(self._size, start + self._block) - 1
        block = self._fetch(start, end)
        self.fetches += 1
        self._cache[index] = block
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return block

    def readinto(self, buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        written = 0
        while written < len(view) and self._position < self._size:
            index, offset = divmod(self._position, self._block)
            block = self._block_at(index)
            chunk = block[offset : offset + len(view) - written]
            if not chunk:
                break
            view[written : written + len(chunk)] = chunk
            written += len(chunk)
            self._position += len(chunk)
        return written

    def readall(self) -> bytes:
        return self.read(max(0, self._size - self._position)) or b""
