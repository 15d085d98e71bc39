"""One local pipeline (emulator + moto server + runner, from template.yaml) shared by the integration tests."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from ocr_devkit.run import LocalPipeline, RunOptions, local_pipeline

# Objects under invoices/ get extraction with the schema stored at schemas/invoice.json;
# objects under tables/ get table parsing. The rest get the default task.
ROUTING_RULES = [
    {"prefix": "invoices/", "task": "key_information_extraction", "schema_key": "schemas/invoice.json"},
    {"prefix": "tables/", "task": "table_parsing"},
]


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPipeline]:
    options = RunOptions(paths=[], out_dir=tmp_path_factory.mktemp("out"), max_concurrency=2)
    with local_pipeline(
        options,
        log_dir=tmp_path_factory.mktemp("logs"),
        extra_parameters={"RoutingRules": json.dumps(ROUTING_RULES), "TenantRule": "metadata:ocr-tenant,prefix"},
    ) as running:
        yield running
