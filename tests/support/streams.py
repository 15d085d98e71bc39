"""Test streams: a seekable file that counts what is read and can fail like storage does."""

from __future__ import annotations

import io

from ocr_pipeline.errors import OcrPipelineError


class CountingFile(io.RawIOBase):
    """A seekable file over bytes that counts what is read from it, like a ranged storage reader."""

    def __init__(self, data: bytes, *, failing: tuple[int, int] | None = None, error: Exception | None = None) -> None:
        super().__init__()
        self._data = data
        self._position = 0
        self.bytes_read = 0
        # The first read touching [start, end) raises `error`, as a brief storage outage would;
        # later reads succeed, so a reader that swallowed the error could carry on unnoticed.
        self._failing = failing
        self._error = error

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._data)}[whence]
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        end = min(len(self._data), self._position + len(view))
        if self._failing is not None and self._position < self._failing[1] and end > self._failing[0]:
            self._failing = None
            assert self._error is not None
            raise self._error
        chunk = self._data[self._position : end]
        view[: len(chunk)] = chunk
        self._position += len(chunk)
        self.bytes_read += len(chunk)
        return len(chunk)


class StorageUnavailable(OcrPipelineError):
    """Stands in for the storage adapter's typed, retryable error."""

    code = "storage.unavailable"
    retryable = True
