"""The local stack's moto server keeps DynamoDB's atomicity when requests come at once.

Without the lock, plain moto loses an increment or records a page twice in about 4 runs of 10 here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError
from ocr_devkit.stack.moto_server import AtomicDynamoMotoServer

pytestmark = pytest.mark.integration

THREADS = 8
PAGES = 60


@pytest.fixture
def dynamodb() -> Iterator[object]:
    server = AtomicDynamoMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield boto3.client(
            "dynamodb",
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    finally:
        server.stop()


def test_counting_transactions_sent_at_once_lose_no_increment(dynamodb) -> None:
    # Given a job item with a counter, and threads that each record every page of the job once,
    # in one transaction with the counter, as the page service does
    dynamodb.create_table(
        TableName="jobs",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="jobs", Item={"pk": {"S": "job"}, "sk": {"S": "JOB"}, "done": {"N": "0"}})
    recorded: list[int] = []

    def record_every_page() -> None:
        for page in range(PAGES):
            try:
                dynamodb.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": "jobs",
                                "Item": {"pk": {"S": "job"}, "sk": {"S": f"PAGE#{page:04d}"}},
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        {
                            "Update": {
                                "TableName": "jobs",
                                "Key": {"pk": {"S": "job"}, "sk": {"S": "JOB"}},
                                "UpdateExpression": "ADD done :one",
                                "ExpressionAttributeValues": {":one": {"N": "1"}},
                            }
                        },
                    ]
                )
                recorded.append(page)
            except ClientError as error:
                assert error.response["Error"]["Code"] == "TransactionCanceledException"

    # When they all run at once (most of their transactions are duplicates, and are cancelled)
    threads = [threading.Thread(target=record_every_page) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then each page was recorded once, and the counter counted each of them
    job = dynamodb.get_item(TableName="jobs", Key={"pk": {"S": "job"}, "sk": {"S": "JOB"}})["Item"]
    pages = dynamodb.query(
        TableName="jobs",
        KeyConditionExpression="pk = :job AND begins_with(sk, :page)",
        ExpressionAttributeValues={":job": {"S": "job"}, ":page": {"S": "PAGE#"}},
    )["Items"]
    assert sorted(recorded) == list(range(PAGES))
    assert len(pages) == PAGES
    assert int(job["done"]["N"]) == PAGES
