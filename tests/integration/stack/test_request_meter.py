"""The local endpoint meters DynamoDB as AWS bills it, from the items moto really holds.

The unit tests check the rounding on a stand-in; here the sizes come from moto's own state, read inside
the DynamoDB lock before and after each request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from ocr_devkit.stack.dynamodb_units import item_size
from ocr_devkit.stack.moto_server import AtomicDynamoMotoServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[AtomicDynamoMotoServer]:
    running = AtomicDynamoMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    running.start()
    try:
        running.meter.name_caller("testing", "RecognizeFunction")
        yield running
    finally:
        running.stop()


def client(server: AtomicDynamoMotoServer, service: str) -> Any:
    host, port = server.get_host_and_port()
    return boto3.client(
        service,
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def item(pk: str, sk: str, total_bytes: int) -> dict[str, Any]:
    made = {"pk": {"S": pk}, "sk": {"S": sk}, "body": {"S": ""}}
    made["body"]["S"] = "x" * (total_bytes - item_size(made))
    return made


def units_by_action(server: AtomicDynamoMotoServer) -> dict[str, float]:
    totals: dict[str, float] = {}
    for entry in server.meter.snapshot():
        if entry.service == "dynamodb" and entry.unit in ("wru", "rru"):
            totals[entry.action] = totals.get(entry.action, 0.0) + entry.quantity
    return totals


def test_the_meter_counts_request_units_from_the_items_moto_holds(server: AtomicDynamoMotoServer) -> None:
    dynamodb = client(server, "dynamodb")
    dynamodb.create_table(
        TableName="jobs",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    server.meter.reset()
    # Given a transaction of three 1.5 KB items
    dynamodb.transact_write_items(
        TransactItems=[{"Put": {"TableName": "jobs", "Item": item("job", f"PAGE#{n}", 1536)}} for n in range(3)]
    )
    # And a conditional put refused on one of them, and a strongly consistent query of all three (4.5 KB)
    with pytest.raises(ClientError):
        dynamodb.put_item(
            TableName="jobs", Item=item("job", "PAGE#0", 100), ConditionExpression="attribute_not_exists(pk)"
        )
    dynamodb.query(
        TableName="jobs",
        KeyConditionExpression="pk = :job",
        ExpressionAttributeValues={":job": {"S": "job"}},
        ConsistentRead=True,
    )
    # And an eventually consistent read of one
    dynamodb.get_item(TableName="jobs", Key={"pk": {"S": "job"}, "sk": {"S": "PAGE#1"}})
    # Then: 3 x 2 KB x 2 = 12 WRU; the refused put 2 WRU (the 1.5 KB item it found); 2 RRU; 0.5 RRU
    assert units_by_action(server) == {"TransactWriteItems": 12, "PutItem": 2, "Query": 2, "GetItem": 0.5}
    assert {entry.caller for entry in server.meter.snapshot()} == {"RecognizeFunction"}
