"""A batch file being filled, and its manifest: which page each line is, and what was sent for it.

The manifest is kept in S3 beside the file, because the answers come back hours later, to another
function: each line's image is gone by then, and its size and coordinate mapping are what read the reply.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from pydantic import BaseModel, ConfigDict

from ..batch_api import batch_line
from ..catalog import Region
from ..recognition import SentImage

# Files up to this size stay in memory; a larger one spills to the function's /tmp.
SPOOL_BYTES = 16 * 1024 * 1024
_KEY_TIME = "%Y%m%dT%H%M%SZ"


def new_batch_key(now: float) -> str:
    """Sortable by creation time (unfinished batches are listed oldest first), unique by its random tail."""
    return f"{datetime.fromtimestamp(now, UTC).strftime(_KEY_TIME)}-{secrets.token_hex(6)}"


def batch_key_time(batch_key: str) -> float:
    """When the batch was begun, from its key."""
    return datetime.strptime(batch_key.split("-", 1)[0], _KEY_TIME).replace(tzinfo=UTC).timestamp()


class BatchEntry(BaseModel):
    """One line of a batch file: the page it asks about, for which attempt, and the image it sent."""

    model_config = ConfigDict(frozen=True)

    custom_id: str
    job_id: str
    page: int
    attempt: int
    image: SentImage


class BatchManifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_key: str
    model: str
    region: Region
    entries: list[BatchEntry]


class BatchFile:
    """A JSONL file of one model's lines, filled up to the vendor's limits (lines, bytes)."""

    def __init__(self, batch_key: str, model: str, region: Region, *, max_lines: int, max_bytes: int) -> None:
        self.batch_key = batch_key
        self.model = model
        self.region = region
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.entries: list[BatchEntry] = []
        self.size = 0
        self.file = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))  # noqa: SIM115 (close())

    @staticmethod
    def encode(custom_id: str, body: dict[str, Any]) -> bytes:
        return (json.dumps(batch_line(custom_id, body), ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def fits(self, line: bytes) -> bool:
        return len(self.entries) < self.max_lines and self.size + len(line) <= self.max_bytes

    def add(self, entry: BatchEntry, line: bytes) -> None:
        self.file.write(line)
        self.size += len(line)
        self.entries.append(entry)

    def manifest(self) -> BatchManifest:
        return BatchManifest(batch_key=self.batch_key, model=self.model, region=self.region, entries=self.entries)

    def close(self) -> None:
        self.file.close()
