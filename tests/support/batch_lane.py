"""The batch lane on in-memory ports: a stack with the lane, and the batch queue as its consumer reads it."""

from __future__ import annotations

import time

from ocr_pipeline.adapters.dashscope import OcrServiceSettings
from ocr_pipeline.batch_api import BatchStatus
from ocr_pipeline.pipeline.batch_collection import BatchCollectionService
from ocr_pipeline.pipeline.batch_submission import BatchSubmissionService
from ocr_pipeline.pipeline.records import BatchState, InboxMessage
from ocr_pipeline.pipeline.upload import UploadedObject

from tests.support.batch_fakes import FakeBatchApi, InMemoryBatchStore
from tests.support.fakes import INPUT, FakeOcrService, Pipeline
from tests.support.memory import MemoryWorkQueue


class MemoryInbox(MemoryWorkQueue):
    """The batch queue as its consumer reads it: received messages are hidden until deleted or redelivered."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: dict[str, str] = {}
        self._receipts = 0

    def receive(self, max_messages: int) -> list[InboxMessage]:
        taken, self.bodies = self.bodies[:max_messages], self.bodies[max_messages:]
        messages = []
        for body in taken:
            self._receipts += 1
            receipt = f"r{self._receipts}"
            self.in_flight[receipt] = body
            messages.append(InboxMessage(message_id=receipt, body=body, receipt=receipt))
        return messages

    def delete(self, receipts) -> None:
        for receipt in receipts:
            self.in_flight.pop(receipt)

    def redeliver(self) -> None:
        """The visibility timeout of every message not deleted runs out."""
        self.bodies.extend(self.in_flight.values())
        self.in_flight.clear()


class BatchLaneStack:
    """A stack with the batch lane, on in-memory ports."""

    def __init__(self, ocr: FakeOcrService | None = None, **settings) -> None:
        self.p = Pipeline(ocr, **settings)
        self.p.ocr_settings = OcrServiceSettings(api_key="test", model="qwen-vl-ocr", region="cn")
        self.p.settings = self.p.settings.model_copy(update={"ocr": self.p.ocr_settings.defaults()})
        self.p.upload.settings = self.p.intake.settings = self.p.settings
        self.inbox = MemoryInbox()
        self.p.intake.batch_queue = self.inbox
        self.batches = InMemoryBatchStore()
        self.api = FakeBatchApi(FakeOcrService("answered in a batch"))
        self.now = time.time()
        self.submission = BatchSubmissionService(
            self.p.settings, self.p.store, self.batches, self.api, self.inbox, self.p.pages, clock=lambda: self.now
        )
        self.collection = BatchCollectionService(
            self.p.settings,
            self.p.store,
            self.batches,
            self.api,
            self.p.pages,
            batch_queue=self.inbox,
            page_queue=self.p.queue,
            clock=lambda: self.now,
        )

    def upload(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> None:
        self.p.store.put(INPUT, key, body, metadata={"ocr-mode": "batch", **(metadata or {})})
        self.p.upload.accept(UploadedObject(bucket=INPUT, key=key))

    def submit(self):
        return self.submission.run(deadline=time.monotonic() + 600)

    def collect(self):
        return self.collection.run(deadline=time.monotonic() + 600)

    def open_batches(self) -> list[str]:
        return [r.vendor_batch_id for r in self.batches.unfinished_batches() if r.state is BatchState.OPEN]

    def finish_all(self, status: BatchStatus = BatchStatus.COMPLETED, **lines) -> None:
        for batch_id in self.open_batches():
            self.api.finish(batch_id, status, **lines)

    def events(self, event_type: str):
        return self.p.bus.of_type(event_type)
