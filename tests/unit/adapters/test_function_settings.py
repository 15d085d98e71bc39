"""The functions' settings come from their environment, by the variable names their fields declare."""

from __future__ import annotations

import json

import pytest
from ocr_pipeline.adapters.dashscope import OcrServiceSettings
from ocr_pipeline.bootstrap import read_pipeline_settings
from ocr_pipeline.catalog import Region
from ocr_pipeline.errors import ConfigurationError

# An environment as template.yaml writes one: lists comma-separated, "not given" numbers as 0, rules as JSON.
ENVIRONMENT = {
    "RESULT_BUCKET": "results",
    "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:topic",
    "PAGE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/pages",
    "JOBS_TABLE": "jobs",
    "IDEMPOTENCY_TABLE": "idempotency",
    "INPUT_BUCKET": "input",
    "REQUEST_SOURCE_BUCKETS": "partner-a, partner-b",
    "URL_ALLOWLIST": "",
    "ROUTING_RULES": json.dumps([{"prefix": "invoices/", "task": "key_information_extraction"}]),
    "TENANT_RULE": "static:acme",
    "REQUEST_TENANTS": "AIDAPARTNER=partner",
    "MAX_PAGES": "200",
    "PAGE_CHUNK_SIZE": "2",
    "PDF_TEXT_LAYER": "Prefer",
    "TRUNCATION_POLICY": "flag",
    "OCR_MODEL": "qwen-vl-ocr-2025-11-20",
    "OCR_REGION": "intl",
    "OCR_PROTOCOL": "dashscope",
    "OCR_BASE_URL": "",
    "OCR_RPS_LIMIT": "20",
    "OCR_RPS_SHARES": "10",
    "OCR_ALLOW_UNLISTED_MODEL": "false",
    "OCR_UNLISTED_MODEL_PATCH": "0",
    "DASHSCOPE_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:k",
    "POWERTOOLS_SERVICE_NAME": "ocr-pipeline",
}


def test_the_process_environment_and_a_given_one_read_the_same(monkeypatch):
    # Given the same variables, once in the process's environment
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    from_process = read_pipeline_settings()
    # Then they read as the mapping does, field by field
    assert from_process.model_dump() == read_pipeline_settings(ENVIRONMENT).model_dump()
    assert OcrServiceSettings.from_env().model_dump() == OcrServiceSettings.from_env(ENVIRONMENT).model_dump()


def test_every_variable_reaches_its_field():
    settings = read_pipeline_settings(ENVIRONMENT)
    assert settings.request_source_buckets == ["partner-a", "partner-b"]
    assert settings.url_allowlist == []
    assert [rule.prefix for rule in settings.routing_rules] == ["invoices/"]
    assert settings.tenant_rule.tenant_for("a.png", {}, []) == "acme"
    assert settings.request_tenants.tenant_for("AIDAPARTNER", None, "default") == "partner"
    assert (settings.max_pages, settings.page_chunk_size, settings.pdf_text_layer) == (200, 2, "prefer")
    assert (settings.ocr.model, settings.ocr.region, settings.ocr.catalog_checked) == (
        "qwen-vl-ocr-2025-11-20",
        Region.INTL,
        True,
    )
    ocr = OcrServiceSettings.from_env(ENVIRONMENT)
    assert ocr.requests_per_second == 2.0 and ocr.unlisted_model_patch is None and ocr.base_url is None


def test_a_refused_value_names_its_field_and_its_variable():
    with pytest.raises(ConfigurationError) as refused:
        read_pipeline_settings({**ENVIRONMENT, "PAGE_CHUNK_SIZE": "500"})
    assert "page_chunk_size (PAGE_CHUNK_SIZE)" in refused.value.message
    with pytest.raises(ConfigurationError) as refused:
        OcrServiceSettings.from_env({**ENVIRONMENT, "OCR_MAX_ATTEMPTS": "0"})
    assert "max_attempts (OCR_MAX_ATTEMPTS)" in refused.value.message


def test_a_self_hosted_server_needs_no_key_unless_told():
    hosted = {"OCR_PROTOCOL": "openai", "OCR_BASE_URL": "http://10.0.0.5:8000/v1", "OCR_MODEL": "qwen3-vl-8b"}
    assert OcrServiceSettings.from_env(hosted).require_api_key is False
    assert OcrServiceSettings.from_env(hosted, require_api_key=True).require_api_key is True
    assert OcrServiceSettings.from_env({"OCR_PROTOCOL": "openai"}).require_api_key is True
