"""DynamoDB's read and write request units, as on-demand mode bills them.

* An item's size is the sum of its attribute names and values in bytes (`item_size`): a string is its
  UTF-8 length, a number about one byte per two significant digits plus one, binary its raw length,
  a boolean or null one byte; a list or map takes 3 bytes plus its elements, one more byte each.
* A write is 1 WRU per started KB of the larger of the item before and after it (`write_units`);
  a write refused by its condition still consumes, at the item's size as it stands, and so does
  deleting an item that is not there (1 WRU).
* A read is 1 RRU per started 4 KB strongly consistent, half of it eventually consistent (`read_units`);
  a read that finds nothing still consumes the minimum. A query adds up the items it read before
  rounding (`query_read_units`).
* A transaction's items cost twice as much: 2 WRU per KB written, 2 RRU per 4 KB read.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
TRANSACTION_FACTOR = 2
_CONTAINER_OVERHEAD = 3
_ELEMENT_OVERHEAD = 1


def number_size(text: str) -> int:
    """Bytes of a number: one per two significant digits (leading and trailing zeros dropped), plus one."""
    try:
        digits = "".join(str(d) for d in Decimal(text).normalize().as_tuple().digits)
    except InvalidOperation:
        digits = "".join(c for c in text if c.isdigit())
    significant = digits.strip("0") or "0"
    return math.ceil(len(significant) / 2) + 1


def value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value in DynamoDB's wire form ({"S": "..."}, {"N": "1"}, {"M": {...}}, ...)."""
    ((kind, content),) = value.items()
    if kind == "S":
        return len(str(content).encode("utf-8"))
    if kind == "N":
        return number_size(str(content))
    if kind == "B":
        return len(base64.b64decode(content)) if isinstance(content, str) else len(content)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(s).encode("utf-8")) for s in content)
    if kind == "NS":
        return sum(number_size(str(n)) for n in content)
    if kind == "BS":
        return sum(value_size({"B": b}) for b in content)
    if kind == "L":
        return _CONTAINER_OVERHEAD + sum(value_size(v) + _ELEMENT_OVERHEAD for v in content)
    if kind == "M":
        return _CONTAINER_OVERHEAD + sum(
            len(name.encode("utf-8")) + value_size(v) + _ELEMENT_OVERHEAD for name, v in content.items()
        )
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]] | None) -> int:
    """Bytes of an item (attribute names plus values); 0 for no item."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def write_units(before: int, after: int, *, transactional: bool = False) -> int:
    """WRU of one item write, from the item's size before and after it (0 where there is no item)."""
    units = max(1, math.ceil(max(before, after) / WRITE_UNIT_BYTES))
    return units * (TRANSACTION_FACTOR if transactional else 1)


def read_units(size: int, *, consistent: bool, transactional: bool = False) -> float:
    """RRU of reading one item of `size` bytes (0: not found, still the minimum)."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    if transactional:
        return float(units * TRANSACTION_FACTOR)
    return float(units) if consistent else units / 2


def query_read_units(sizes: Iterable[int], *, consistent: bool) -> float:
    """RRU of one Query or Scan page: the sizes of the items it read add up before the 4 KB rounding."""
    return read_units(sum(sizes), consistent=consistent)
