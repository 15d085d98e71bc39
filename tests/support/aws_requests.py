"""Every AWS request the pipeline's functions make for a document, counted on moto's in-process AWS.

The services run on their real boto3 adapters (adapters/aws.py) and behind the real Powertools
idempotency guard, wired as bootstrap.py wires them, and are driven as the upload and recognize
handlers drive them: one S3 event, then each page message from the queue. A botocore hook on every
client counts the API calls. What Lambda itself does (polling and deleting SQS messages) is not a
function's request and is not counted here.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto import mock_aws
from moto import settings as moto_settings
from ocr_pipeline.adapters import aws, idempotency
from ocr_pipeline.adapters.aws import DynamoJobStore, S3ObjectStore, SnsEventBus, SqsWorkQueue
from ocr_pipeline.adapters.dashscope import OcrServiceSettings
from ocr_pipeline.adapters.idempotency import Once
from ocr_pipeline.bootstrap import PAGE_GUARD, UPLOAD_GUARD, pricer
from ocr_pipeline.catalog import Region
from ocr_pipeline.pipeline.config import PipelineSettings
from ocr_pipeline.pipeline.intake import DocumentIntake
from ocr_pipeline.pipeline.model import PAGE_QUEUE_MESSAGE, PageDispatch
from ocr_pipeline.pipeline.page_recognition import PageRecognitionService
from ocr_pipeline.pipeline.settlement import SettlementService
from ocr_pipeline.pipeline.upload import UploadedObject, UploadService
from ocr_pipeline.pricing import Cost
from ocr_pipeline.recognition import Recognizer
from ocr_pipeline.usage import Pricing, Usage

from tests.support.fakes import FakeOcrService
from tests.support.lambda_helpers import FakeLambdaContext

REGION = "us-east-1"
INPUT = "ocr-input"
RESULTS = "ocr-results"
JOBS = "jobs"
IDEMPOTENCY = "idempotency"


@dataclass
class RequestCount:
    """API calls by "service.Operation", with S3 calls split by what they touch, and transaction items."""

    calls: Counter[str] = field(default_factory=Counter)
    transaction_items: int = 0

    def hook(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        name = f"{service}.{model.name}"
        if service == "s3":
            name += f"[{_s3_object_class(params)}]"
        elif service == "dynamodb":
            table = params.get("TableName") or _transaction_table(params)
            name += f"[{'idempotency' if table == IDEMPOTENCY else 'jobs'}]"
        self.calls[name] += 1
        if model.name == "TransactWriteItems":
            self.transaction_items += len(params.get("TransactItems", []))

    def after_get(self, http_response: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
        """A GET that found nothing (a 404, billed as a GET) is told apart from one that read something."""
        if http_response.status_code == 404:
            name = f"s3.GetObject[{context.get('counted_class', '?')}]"
            self.calls[name] -= 1
            self.calls[name.replace("]", ", missing]")] += 1

    def remember_class(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["counted_class"] = _s3_object_class(params)

    def register(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.*.*", self.hook)
        client.meta.events.register("before-parameter-build.s3.GetObject", self.remember_class)
        client.meta.events.register("after-call.s3.GetObject", self.after_get)

    def per_page(self, pages: int) -> dict[str, float]:
        return {name: round(n / pages, 2) for name, n in sorted(self.calls.items()) if n}

    def total(self, prefix: str) -> int:
        return sum(n for name, n in self.calls.items() if name.startswith(prefix))


def _s3_object_class(params: dict[str, Any]) -> str:
    bucket, key = params.get("Bucket"), str(params.get("Key") or params.get("Prefix") or "")
    if bucket == INPUT:
        return "source"
    if key.startswith("jobs/"):
        return "page"
    return "document"


def _transaction_table(params: dict[str, Any]) -> str | None:
    for item in params.get("TransactItems", []):
        for action in item.values():
            return str(action.get("TableName"))
    return None


class AwsPipeline:
    """The upload and recognize functions' services on moto, with every request counted."""

    def __init__(self, **settings_overrides: Any) -> None:
        self.count = RequestCount()
        self.s3 = self._client("s3")
        self.sqs = self._client("sqs")
        self.sns = self._client("sns")
        dynamodb = self._client("dynamodb")
        self.s3.create_bucket(Bucket=INPUT)
        self.s3.create_bucket(Bucket=RESULTS)
        queue_url = self.sqs.create_queue(QueueName="pages")["QueueUrl"]
        topic_arn = self.sns.create_topic(Name="events")["TopicArn"]
        keys = {"pk": "HASH", "sk": "RANGE"}
        dynamodb.create_table(
            TableName=JOBS,
            KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys.items()],
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.create_table(
            TableName=IDEMPOTENCY,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        # The idempotency guard builds its client through aws_client (cached): count that one too.
        aws.aws_client.cache_clear()
        idempotency._persistence.cache_clear()
        self.count.register(aws.aws_client("dynamodb"))
        self.ocr = FakeOcrService()
        self.ocr_settings = OcrServiceSettings(api_key="test")
        self.settings = PipelineSettings(
            result_bucket=RESULTS,
            topic_arn=topic_arn,
            page_queue_url=queue_url,
            jobs_table=JOBS,
            idempotency_table=IDEMPOTENCY,
            ocr=self.ocr_settings.defaults(),
            **settings_overrides,
        )
        self.dynamodb = dynamodb
        store, jobs, bus = self._ports()
        self.recognizers: dict[tuple[str, Region], Recognizer] = {}
        intake = DocumentIntake(self.settings, store, SqsWorkQueue(queue_url, self.sqs), jobs, bus)
        self.intake = intake
        self.upload = UploadService(self.settings, intake)
        self.pages = self.worker()
        self.count.calls.clear()

    def _ports(self) -> tuple[S3ObjectStore, DynamoJobStore, SnsEventBus]:
        return (
            S3ObjectStore(self.s3),
            DynamoJobStore(JOBS, self.dynamodb),
            SnsEventBus(self.settings.topic_arn, self.sns),
        )

    def worker(self) -> PageRecognitionService:
        """A recognize function's service as a new instance (cold start) builds it."""
        store, jobs, bus = self._ports()
        settlement = SettlementService(self.settings, store, jobs, bus, self._price)
        return PageRecognitionService(self.settings, store, jobs, self._recognizer, settlement)

    def _client(self, service: str) -> Any:
        client = boto3.client(service, region_name=REGION)
        self.count.register(client)
        return client

    def _recognizer(self, model: str, region: Region) -> Recognizer:
        if (model, region) not in self.recognizers:
            settings = self.ocr_settings.model_copy(update={"model": model, "region": region})
            self.recognizers[(model, region)] = Recognizer(self.ocr, settings.target())
        return self.recognizers[(model, region)]

    def _price(self, usage: Usage, model: str, region: Region, pricing: Pricing = "realtime") -> Cost | None:
        return pricer(self._recognizer)(usage, model, region, pricing)

    def put_source(self, key: str, body: bytes) -> None:
        """Store a document without counting it: the uploader's PUT is not the pipeline's."""
        with self.count_paused():
            self.s3.put_object(Bucket=INPUT, Key=key, Body=body)

    @contextmanager
    def count_paused(self) -> Iterator[None]:
        saved = Counter(self.count.calls), self.count.transaction_items
        yield
        self.count.calls, self.count.transaction_items = saved

    def run(self, key: str, *, worker_per_message: bool = False) -> None:
        """The upload function on the object's event, then the recognize function on each page message.

        With `worker_per_message`, each message goes to a new instance of the recognize function, as
        when many run at once: nothing a worker remembers (job specs, page results) helps another.
        """
        once = Once(IDEMPOTENCY, **UPLOAD_GUARD)
        upload = UploadedObject(bucket=INPUT, key=key)
        once.run(upload, lambda: self.upload.accept(upload).model_dump(mode="json"), FakeLambdaContext())
        page_guard = Once(IDEMPOTENCY, **PAGE_GUARD)
        while True:
            with self.count_paused():
                # Lambda's poller receives and deletes the messages: not the functions' requests.
                received = self.sqs.receive_message(QueueUrl=self.settings.page_queue_url, MaxNumberOfMessages=10)
            messages = received.get("Messages", [])
            if not messages:
                return
            for message in messages:
                work = PAGE_QUEUE_MESSAGE.validate_json(message["Body"])
                if isinstance(work, PageDispatch):
                    self.intake.continue_dispatch(work)
                else:
                    pages = self.worker() if worker_per_message else self.pages
                    page_guard.run(work, lambda work=work, pages=pages: pages.process(work), FakeLambdaContext())
                with self.count_paused():
                    self.sqs.delete_message(
                        QueueUrl=self.settings.page_queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )


@contextmanager
def moto_aws(monkeypatch: Any) -> Iterator[None]:
    """moto's AWS in this process, without IAM (a local stack open in the same session enforces it)."""
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        try:
            yield
        finally:
            aws.aws_client.cache_clear()
            idempotency._persistence.cache_clear()


def text_pdf(pages: int) -> bytes:
    """A PDF of `pages` scanned-looking pages, one line of text each."""
    from PIL import Image, ImageDraw

    images = []
    for number in range(1, pages + 1):
        page = Image.new("L", (620, 877), 255)
        ImageDraw.Draw(page).text((60, 80), f"Statement page {number}", fill=0)
        images.append(page)
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=75)
    return buffer.getvalue()
