"""The batch lane's records in the jobs table (the BatchStore port), on boto3.

Items (pk, sk):
- (job id, "BATCH#000001"): which batch holds a page, for which attempt (`attempt`, `batch_key`). An
  assignment only moves to a later attempt, so a redelivered page message never puts a page in two batches;
  within its attempt it moves only from the batch it names (reassign_page, for a batch never staged).
- ("batches#unfinished", batch key): each batch not closed yet, with every field of its BatchRecord. Its
  state only moves forward: staged -> uploaded -> open (staged -> open too). Repeating a step with the same
  id is a no-op; any other step from the wrong state raises BatchStateConflict, so two runs racing on one
  batch never both go on (the second never makes a second vendor batch from a second upload).
- ("batch#<key>", "BATCH"): a closed batch, written in the same transaction that deletes its unfinished
  item, so a batch is closed exactly once. Kept 90 days (TTL `expires_at`), as page assignments are kept
  as long as job records.

IAM (template.yaml policies are written from this): dynamodb:PutItem, dynamodb:GetItem,
dynamodb:UpdateItem, dynamodb:Query and dynamodb:DeleteItem on the jobs table; close_batch's
TransactWriteItems is checked as its PutItem and DeleteItem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..pipeline.port_errors import BatchStateConflict, StorageError
from ..pipeline.records import BatchRecord, BatchState, PageAssignment
from .aws import JOB_RETENTION_S, DynamoTable, _error_code, _item_key

UNFINISHED_PK = "batches#unfinished"
CLOSED_SK = "BATCH"
CLOSED_RETENTION_S = 90 * 24 * 3600
_RECORD_FIELDS = tuple(name for name in BatchRecord.model_fields if name != "batch_key")
# Fields of a BatchRecord kept as numbers; the others are strings. A field that is None is left out.
_NUMBER_FIELDS = frozenset(name for name in _RECORD_FIELDS if BatchRecord.model_fields[name].annotation in (int, float))
# A close that finds its record moved on between reading and writing reads it again, this many times.
CLOSE_TRIES = 3


def assignment_sk(page: int) -> str:
    return f"BATCH#{page:06d}"


def closed_pk(batch_key: str) -> str:
    return f"batch#{batch_key}"


class DynamoBatchStore(DynamoTable):
    """BatchStore on the jobs table (pk/sk strings, TTL `expires_at`); see the module's docstring."""

    def assign_page(self, job_id: str, page: int, attempt: int, batch_key: str) -> bool:
        item = {
            **_item_key(job_id, assignment_sk(page)),
            "attempt": {"N": str(attempt)},
            "batch_key": {"S": batch_key},
            "expires_at": {"N": str(int(self._clock()) + JOB_RETENTION_S)},
        }
        refused = self._write(
            self.client.put_item,
            Item=item,
            ConditionExpression="attribute_not_exists(pk) OR #attempt < :attempt",
            ExpressionAttributeNames={"#attempt": "attempt"},
            ExpressionAttributeValues={":attempt": {"N": str(attempt)}},
        )
        return refused is None

    def page_assignment(self, job_id: str, page: int) -> PageAssignment | None:
        item = self._get(_item_key(job_id, assignment_sk(page)))
        if item is None:
            return None
        return PageAssignment(attempt=int(item["attempt"]["N"]), batch_key=item["batch_key"]["S"])

    def reassign_page(self, job_id: str, page: int, attempt: int, from_key: str, to_key: str) -> bool:
        refused = self._write(
            self.client.update_item,
            Key=_item_key(job_id, assignment_sk(page)),
            UpdateExpression="SET batch_key = :to",
            ConditionExpression="#attempt = :attempt AND batch_key = :from",
            ExpressionAttributeNames={"#attempt": "attempt"},
            ExpressionAttributeValues={
                ":attempt": {"N": str(attempt)},
                ":from": {"S": from_key},
                ":to": {"S": to_key},
            },
        )
        return refused is None

    def get_batch(self, batch_key: str) -> BatchRecord | None:
        # Unfinished first: a close between the two reads then finds the closed record, never neither.
        for key in (_item_key(UNFINISHED_PK, batch_key), _item_key(closed_pk(batch_key), CLOSED_SK)):
            item = self._get(key)
            if item is not None:
                return _record_from_item(item)
        return None

    def stage_batch(self, batch: BatchRecord) -> None:
        if batch.state is not BatchState.STAGED:
            raise ValueError(f"a new batch is staged, not {batch.state.value}")
        refused = self._write(
            self.client.put_item, Item=_unfinished_item(batch), ConditionExpression="attribute_not_exists(pk)"
        )
        # Staging the same record again (a retried call whose first write landed) is no conflict.
        if refused is not None and _record_from_item(refused) != batch:
            raise BatchStateConflict(f"a different batch with key {batch.batch_key} exists already")

    def batch_uploaded(self, batch_key: str, file_id: str) -> None:
        self._step(
            batch_key,
            BatchState.UPLOADED,
            "file_id",
            file_id,
            "(#state = :staged OR (#state = :to AND file_id = :id))",
        )

    def batch_opened(self, batch_key: str, vendor_batch_id: str) -> None:
        self._step(
            batch_key,
            BatchState.OPEN,
            "vendor_batch_id",
            vendor_batch_id,
            "(#state IN (:staged, :uploaded) OR (#state = :to AND vendor_batch_id = :id))",
        )

    def unfinished_batches(self) -> list[BatchRecord]:
        # The sort key orders them already; batch keys begin with a sortable UTC time.
        return [_record_from_item(item) for item in self._query("pk = :pk", {":pk": {"S": UNFINISHED_PK}})]

    def close_batch(self, batch_key: str, vendor_status: str) -> bool:
        for _ in range(CLOSE_TRIES):
            item = self._get(_item_key(UNFINISHED_PK, batch_key))
            if item is None:
                return False
            if self._close(item, vendor_status):
                return True
        raise BatchStateConflict(f"batch {batch_key} kept changing while it was being closed")

    # --- DynamoDB ------------------------------------------------------------------------------

    def _write(self, call: Callable[..., Any], **kwargs: Any) -> dict[str, Any] | None:
        """A conditional write: None when done, else the item that refused it ({} when there was none)."""
        try:
            call(TableName=self.table_name, ReturnValuesOnConditionCheckFailure="ALL_OLD", **kwargs)
            return None
        except Exception as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                item: dict[str, Any] = (getattr(exc, "response", None) or {}).get("Item") or {}
                return item
            raise StorageError(f"DynamoDB failed: {_error_code(exc) or exc}") from None

    def _step(self, batch_key: str, to: BatchState, attribute: str, value: str, from_states: str) -> None:
        refused = self._write(
            self.client.update_item,
            Key=_item_key(UNFINISHED_PK, batch_key),
            UpdateExpression=f"SET #state = :to, {attribute} = :id",
            ConditionExpression=f"attribute_exists(pk) AND {from_states}",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":to": {"S": to.value},
                ":id": {"S": value},
                ":staged": {"S": BatchState.STAGED.value},
                **({":uploaded": {"S": BatchState.UPLOADED.value}} if ":uploaded" in from_states else {}),
            },
        )
        if refused is None:
            return
        if not refused:
            raise BatchStateConflict(f"batch {batch_key} is not unfinished (closed, or never staged); not {to.value}")
        now = refused.get("state", {}).get("S")
        held = refused.get(attribute, {}).get("S")
        raise BatchStateConflict(
            f"batch {batch_key} is {now} with {attribute} {held}; it cannot become {to.value} with {value}"
        )

    def _close(self, item: dict[str, Any], vendor_status: str) -> bool:
        """One transaction: the unfinished item goes, the closed one comes. False when the item changed."""
        record = _record_from_item(item)
        closed = {
            **_record_attributes(
                record.model_copy(update={"state": BatchState.CLOSED, "vendor_status": vendor_status})
            ),
            **_item_key(closed_pk(record.batch_key), CLOSED_SK),
            "batch_key": {"S": record.batch_key},
            "expires_at": {"N": str(int(self._clock()) + CLOSED_RETENTION_S)},
        }
        return self._transaction(
            [
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": _item_key(UNFINISHED_PK, record.batch_key),
                        # Unchanged since it was read, so the closed record holds its last ids.
                        "ConditionExpression": "attribute_exists(pk) AND #state = :seen",
                        "ExpressionAttributeNames": {"#state": "state"},
                        "ExpressionAttributeValues": {":seen": {"S": record.state.value}},
                    }
                },
                {"Put": {"TableName": self.table_name, "Item": closed}},
            ]
        )


def _record_attributes(record: BatchRecord) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for name in _RECORD_FIELDS:
        value = getattr(record, name)
        if value is None:
            continue
        attributes[name] = {"N": str(value)} if name in _NUMBER_FIELDS else {"S": str(value)}
    return attributes


def _unfinished_item(batch: BatchRecord) -> dict[str, Any]:
    return {**_item_key(UNFINISHED_PK, batch.batch_key), **_record_attributes(batch)}


def _record_from_item(item: dict[str, Any]) -> BatchRecord:
    fields: dict[str, Any] = {"batch_key": item.get("batch_key", item["sk"])["S"]}
    for name in _RECORD_FIELDS:
        if name in item:
            fields[name] = item[name]["N"] if name in _NUMBER_FIELDS else item[name]["S"]
    return BatchRecord.model_validate(fields)
