"""Requests by message: validation, allowed sources, the answer on the topic, and the pinned URL download."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import httpx
import pytest
from ocr_pipeline.adapters.web import HttpSourceFetcher
from ocr_pipeline.errors import InputTooLarge, SourceFetchFailed, SourceForbidden, SourceUnavailable
from ocr_pipeline.pipeline.dead_letters import DeadLetterService
from ocr_pipeline.pipeline.intake import IntakeDecision
from ocr_pipeline.pipeline.model import PageWork
from ocr_pipeline.pipeline.records import Download
from ocr_pipeline.pipeline.request_intake import RequestService, request_json_schema
from ocr_pipeline.pipeline.routing import RequestTenants, TenantRule
from ocr_pipeline.pipeline.sources import SourcePolicy

from tests.support.fakes import INPUT, RESULTS, Pipeline, text_png
from tests.support.images import multipage_tiff

ROOT = Path(__file__).resolve().parents[3]
PARTNER = "partner-documents"
PUBLIC_ADDRESS = "93.184.215.14"


class FakeFetcher:
    """DNS answers and documents by URL; records which address each download was pinned to."""

    def __init__(self, addresses: dict[str, list[str]], documents: dict[str, bytes]) -> None:
        self.addresses = addresses
        self.documents = documents
        self.downloads: list[tuple[str, str]] = []

    def resolve(self, host: str, port: int) -> list[str]:
        return self.addresses.get(host, [])

    def download(self, url: str, address: str, sink, max_bytes: int) -> Download:
        self.downloads.append((url, address))
        body = self.documents[url]
        if len(body) > max_bytes:
            raise InputTooLarge(f"{url} is too large", size=len(body))
        sink.write(body)
        return Download(size=len(body), sha256=hashlib.sha256(body).hexdigest(), content_type="image/png")


def service(p: Pipeline, fetcher: FakeFetcher | None = None, hosts: tuple[str, ...] = ("docs.example.com",)):
    policy = SourcePolicy(buckets=frozenset({INPUT, PARTNER}), url_hosts=hosts)
    return RequestService(p.settings, p.intake, fetcher or FakeFetcher({}, {}), policy)


def failure_of(p: Pipeline) -> tuple[str, str, dict]:
    (failed,) = p.bus.of_type("document.failed")
    return failed.data["error"]["code"], failed.correlation_id, failed.data


def test_a_valid_s3_request_is_admitted_and_answered_with_its_correlation_id():
    # (this sender may name who pays)
    p = Pipeline(request_tenants=RequestTenants.parse("AIDAPARTNER=*"))
    p.store.put(PARTNER, "in/receipt.png", text_png(), content_type="image/png")
    body = json.dumps(
        {"source": {"bucket": PARTNER, "key": "in/receipt.png"}, "tenant": "acme", "correlation_id": "order-17"}
    )
    outcome = service(p).handle(body, "m-1", "AIDAPARTNER")
    assert outcome.decision is IntakeDecision.ENQUEUED
    p.drain()
    (completed,) = p.bus.of_type("document.completed")
    assert completed.correlation_id == "order-17"
    assert completed.data["tenant"] == "acme" and completed.data["source"]["bucket"] == PARTNER
    assert [e.correlation_id for e in p.bus.of_type("usage.recorded")] == ["order-17"]


def test_a_multipage_request_fans_out_like_an_upload():
    p = Pipeline(page_chunk_size=2)
    p.store.put(INPUT, "fax.tiff", multipage_tiff(5), content_type="image/tiff")
    body = json.dumps({"source": {"bucket": INPUT, "key": "fax.tiff"}, "correlation_id": "fax-1"})
    outcome = service(p).handle(body, "m-1")
    assert outcome.page_count == 5
    assert [PageWork.model_validate_json(b).pages for b in p.queue.bodies] == [[1, 2], [3, 4], [5]]
    p.drain()
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["page_count"] == 5 and completed.correlation_id == "fax-1"


def test_task_schema_model_and_region_travel_with_the_job():
    p = Pipeline()
    p.store.put(INPUT, "a.png", text_png(), content_type="image/png")
    body = json.dumps(
        {
            "source": {"bucket": INPUT, "key": "a.png"},
            "schema": {"invoice_number": "", "card": ""},
            "validators": {"card": "bank_card"},
            "model": "qwen-vl-ocr-latest",
            "region": "cn",
        }
    )
    service(p).handle(body, "m-1")
    job = p.spec_of(p.queue.bodies[0])
    assert job.options.task == "key_information_extraction"
    assert job.options.result_schema == {"invoice_number": "", "card": ""}
    assert job.options.validators == {"card": "bank_card"}
    assert (job.model, job.region.value) == ("qwen-vl-ocr-latest", "cn")
    assert job.correlation_id == "m-1"  # none given: the SQS message id


def test_the_same_message_delivered_twice_is_one_job_but_two_requests_are_two():
    p = Pipeline()
    p.store.put(INPUT, "a.png", text_png(), content_type="image/png")
    requests = service(p)
    first = requests.handle(json.dumps({"source": {"bucket": INPUT, "key": "a.png"}}), "m-1")
    again = requests.handle(json.dumps({"source": {"bucket": INPUT, "key": "a.png"}}), "m-1")
    other = requests.handle(json.dumps({"source": {"bucket": INPUT, "key": "a.png"}}), "m-2")
    assert again.decision is IntakeDecision.DUPLICATE and again.job_id == first.job_id
    assert other.decision is IntakeDecision.ENQUEUED and other.job_id != first.job_id


@pytest.mark.parametrize(
    ("body", "code", "correlation_id"),
    [
        ("{not json", "request.malformed", "m-9"),
        ("[1, 2]", "request.malformed", "m-9"),
        ('{"correlation_id": "c-1", "source": {"bucket": "input-bucket", "key": "a.png"}, "task": "poetry"}',
         "request.invalid", "c-1"),
        ('{"correlation_id": "c-2"}', "request.invalid", "c-2"),
        ('{"correlation_id": "c-3", "source": {"url": "http://docs.example.com/a.png"}}', "request.invalid", "c-3"),
        ('{"correlation_id": "c-4", "source": {"bucket": "input-bucket", "key": "a"}, "color": "red"}',
         "request.invalid", "c-4"),
        ('{"correlation_id": "c-5", "source": {"bucket": "input-bucket", "key": "a"}, "model": "gpt-4o"}',
         "request.invalid", "c-5"),
        ('{"correlation_id": "c-6", "source": {"bucket": "someone-elses", "key": "a.png"}}',
         "request.source_forbidden", "c-6"),
        ('{"correlation_id": "c-7", "source": {"bucket": "input-bucket", "key": "a"}, "schema": {"n": ""},'
         ' "validators": {"n": "horoscope"}}', "request.invalid", "c-7"),
    ],
)  # fmt: skip
def test_a_bad_request_is_answered_with_a_validation_code_and_not_retried(body, code, correlation_id):
    p = Pipeline()
    outcome = service(p).handle(body, "m-9")  # no exception: the message is deleted, never retried
    assert outcome.decision is IntakeDecision.REJECTED
    assert failure_of(p)[:2] == (code, correlation_id)
    assert p.queue.bodies == []


UNREADABLE_BODIES = [
    pytest.param("[" * 100_000, id="nested past the parser's recursion limit"),
    pytest.param(
        '{"correlation_id": "c-8", "source": {"bucket": "input-bucket", "key": "a"}, "schema": '
        + '{"a": ' * 500
        + '""'
        + "}" * 500
        + "}",
        id="parsable, but too deep for the schema check",
    ),
    pytest.param("1" * 5000, id="an integer too long to convert"),
]


@pytest.mark.parametrize("body", UNREADABLE_BODIES)
def test_a_body_that_cannot_be_read_is_answered_malformed_instead_of_crashing_the_function(body):
    # Given a request queue message no JSON parser should be asked to hold
    p = Pipeline()
    # When the request function handles it
    outcome = service(p).handle(body, "m-10")
    # Then it is answered like any malformed request: failed at once under its message id, nothing sent
    assert outcome.decision is IntakeDecision.REJECTED
    assert failure_of(p)[:2] == ("request.malformed", "m-10")
    assert p.queue.bodies == []


@pytest.mark.parametrize(
    "body",
    [
        *UNREADABLE_BODIES,
        pytest.param('{"message_type": "page_work", "job": 7}', id="a page message of the wrong shape"),
        pytest.param('{"requestPayload": {"Records": [{"s3": {}}]}}', id="an upload record of the wrong shape"),
        pytest.param('{"requestPayload": "Records", "responsePayload": 3}', id="an upload record of wrong types"),
    ],
)
def test_a_dead_letter_that_cannot_be_read_still_ends_as_document_failed(body):
    # Given a dead letter that the dead-letter function cannot read
    p = Pipeline()
    # When it handles the letter
    DeadLetterService(p.upload, p.settlement, p.intake).handle(body, "m-11")
    # Then it does not raise (which would only loop the letter) but answers it as malformed
    assert failure_of(p)[:2] == ("request.malformed", "m-11")


def test_a_missing_object_is_answered_as_not_found():
    p = Pipeline()
    service(p).handle(json.dumps({"source": {"bucket": INPUT, "key": "gone.png"}, "correlation_id": "c"}), "m")
    code, _, data = failure_of(p)
    assert code == "source.not_found" and data["source"] is None


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("https://evil.example.net/a.png", [PUBLIC_ADDRESS]),  # not on the allowlist
        ("https://docs.example.com/a.png", ["127.0.0.1"]),  # loopback
        ("https://docs.example.com/a.png", ["169.254.169.254"]),  # link-local: instance metadata
        ("https://docs.example.com/a.png", ["10.1.2.3"]),  # private
        ("https://docs.example.com/a.png", [PUBLIC_ADDRESS, "192.168.0.7"]),  # one private answer is enough
        ("https://docs.example.com/a.png", ["::1"]),
        ("https://docs.example.com/a.png", ["::ffff:10.0.0.1"]),  # IPv4-mapped private
        ("https://docs.example.com/a.png", ["fd00::1"]),  # unique-local
        ("https://docs.example.com/a.png", []),  # does not resolve
        ("https://user:pw@docs.example.com/a.png", [PUBLIC_ADDRESS]),
    ],
)
def test_a_forbidden_url_is_refused_before_any_connection(url, addresses):
    p = Pipeline()
    fetcher = FakeFetcher({"docs.example.com": addresses, "evil.example.net": addresses}, {url: text_png()})
    service(p, fetcher).handle(json.dumps({"source": {"url": url}, "correlation_id": "u-1"}), "m")
    assert failure_of(p)[:2] == ("request.source_forbidden", "u-1")
    assert fetcher.downloads == []


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::10.0.0.1",  # NAT64 to a private address
        "64:ff9b::7f00:1",  # NAT64 to loopback, written in hex
        "64:ff9b::a9fe:a9fe",  # NAT64 to the instance metadata address
        "64:ff9b:1::a00:1",  # the local-use NAT64 prefix, never public
        "2002:0a00:0001::1",  # 6to4 from 10.0.0.1
        "2002:7f00:1::",  # 6to4 from loopback
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::10.0.0.1",  # deprecated IPv4-compatible form
    ],
)
def test_an_ipv6_address_that_embeds_a_private_ipv4_one_is_refused(address):
    # Given a host that resolves to an IPv6 address a translator or tunnel leads to a private IPv4 address
    p = Pipeline()
    url = "https://docs.example.com/a.png"
    fetcher = FakeFetcher({"docs.example.com": [address]}, {url: text_png()})
    # When it is requested
    service(p, fetcher).handle(json.dumps({"source": {"url": url}, "correlation_id": "v6-1"}), "m")
    # Then it is refused, naming the IPv4 address it embeds, and nothing is downloaded
    code, correlation_id, data = failure_of(p)
    assert (code, correlation_id) == ("request.source_forbidden", "v6-1")
    assert "not a public address" in data["error"]["message"]
    assert fetcher.downloads == []


@pytest.mark.parametrize("address", ["64:ff9b::8.8.8.8", "2002:0808:0808::1", "::ffff:8.8.8.8", "2606:4700::1111"])
def test_an_ipv6_address_that_leads_to_a_public_address_is_allowed(address):
    # Given a host at an IPv6 address that embeds a public IPv4 address, or a plain public one
    # When its addresses are checked, Then it is the one to connect to
    assert SourcePolicy().check_addresses("docs.example.com", [address]) == address


def test_a_literal_nat64_address_in_the_url_is_refused():
    # Given an allowlisted literal NAT64 address for loopback, When the URL is checked, Then it is refused
    policy = SourcePolicy(url_hosts=("64:ff9b::7f00:1",))
    with pytest.raises(SourceForbidden, match=r"embeds 127\.0\.0\.1"):
        policy.check_url("https://[64:ff9b::7f00:1]/a.png")


def test_an_allowed_url_is_downloaded_from_the_checked_address_and_recognized():
    p = Pipeline()
    url = "https://cdn.docs.example.com/scans/a.png#page=1"
    body = text_png()
    fetcher = FakeFetcher({"cdn.docs.example.com": [PUBLIC_ADDRESS]}, {url.split("#")[0]: body})
    outcome = service(p, fetcher, hosts=("*.docs.example.com",)).handle(
        json.dumps({"source": {"url": url}, "correlation_id": "u-2"}), "m"
    )
    assert outcome.decision is IntakeDecision.ENQUEUED
    assert fetcher.downloads == [("https://cdn.docs.example.com/scans/a.png", PUBLIC_ADDRESS)]
    sha = hashlib.sha256(body).hexdigest()
    assert p.store.get_bytes(RESULTS, f"sources/{sha}") == body
    p.drain()
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["source"]["url"] == "https://cdn.docs.example.com/scans/a.png"
    assert completed.correlation_id == "u-2"


def test_a_url_document_over_the_size_limit_fails_with_input_too_large():
    p = Pipeline(max_input_bytes=100)
    url = "https://docs.example.com/big.png"
    fetcher = FakeFetcher({"docs.example.com": [PUBLIC_ADDRESS]}, {url: text_png()})
    service(p, fetcher).handle(json.dumps({"source": {"url": url}}), "m")
    assert failure_of(p)[0] == "input.too_large"


def test_an_empty_url_document_fails_as_empty_at_once():
    # Given an allowed URL that answers with zero bytes
    p = Pipeline()
    url = "https://docs.example.com/empty.png"
    fetcher = FakeFetcher({"docs.example.com": [PUBLIC_ADDRESS]}, {url: b""})
    # When it is requested
    outcome = service(p, fetcher).handle(json.dumps({"source": {"url": url}, "correlation_id": "e-1"}), "m")
    # Then the request is answered document.empty, not retried
    assert outcome.decision is IntakeDecision.REJECTED
    assert failure_of(p)[:2] == ("document.empty", "e-1")


def test_a_request_that_ran_out_of_deliveries_is_answered_failed():
    p = Pipeline()
    body = json.dumps({"source": {"url": "https://docs.example.com/a.png"}, "correlation_id": "late-1"})
    DeadLetterService(p.upload, p.settlement, p.intake).handle(body, "m-5")
    assert failure_of(p)[:2] == ("request.retries_exhausted", "late-1")


def test_the_published_schema_is_the_model_s():
    published = json.loads((ROOT / "layers/ocr_pipeline/ocr_pipeline/schemas/ocr-request.v1.json").read_text())
    assert published == request_json_schema(), "run `make schemas` after changing OcrRequest"


# --- the httpx fetcher -----------------------------------------------------------------------------------


def fetch_with(handler, url="https://docs.example.com/a.png", max_bytes=10_000):
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    fetcher = HttpSourceFetcher(transport=httpx.MockTransport(record))
    sink = io.BytesIO()
    download = fetcher.download(url, PUBLIC_ADDRESS, sink, max_bytes)
    return download, sink.getvalue(), seen


def test_the_fetcher_connects_to_the_checked_address_and_verifies_tls_for_the_host():
    download, body, (request,) = fetch_with(lambda r: httpx.Response(200, content=b"%PDF-1.7 data"))
    assert request.url.host == PUBLIC_ADDRESS and request.headers["host"] == "docs.example.com"
    assert request.extensions["sni_hostname"] == "docs.example.com"
    assert body == b"%PDF-1.7 data" and download.sha256 == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(302, headers={"location": "https://169.254.169.254/"}), SourceFetchFailed),
        (httpx.Response(403), SourceFetchFailed),
        (httpx.Response(503), SourceUnavailable),
        (httpx.Response(429), SourceUnavailable),
        (httpx.Response(200, headers={"content-length": "20000"}, content=b"x" * 20000), InputTooLarge),
    ],
)
def test_the_fetcher_refuses_redirects_errors_and_oversized_bodies(response, error):
    with pytest.raises(error):
        fetch_with(lambda r: response)


def test_an_oversized_body_without_a_length_is_cut_off_while_streaming():
    def endless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"x" * 4096] * 100))

    with pytest.raises(InputTooLarge):
        fetch_with(endless, max_bytes=10_000)


def test_a_source_that_may_recover_is_retried_by_raising():
    p = Pipeline()

    class Flaky(FakeFetcher):
        def download(self, url, address, sink, max_bytes):
            raise SourceUnavailable("503")

    fetcher = Flaky({"docs.example.com": [PUBLIC_ADDRESS]}, {})
    with pytest.raises(SourceUnavailable):
        service(p, fetcher).handle(json.dumps({"source": {"url": "https://docs.example.com/a.png"}}), "m")
    assert p.bus.of_type("document.failed") == []


def test_a_literal_private_address_in_the_url_is_refused_even_when_allowlisted():
    policy = SourcePolicy(url_hosts=("10.0.0.5",))
    with pytest.raises(SourceForbidden):
        policy.check_url("https://10.0.0.5/a.png")


# --- who pays -------------------------------------------------------------------------------------------------


def test_a_request_naming_its_own_tenant_is_refused_unless_the_operator_lets_its_sender_choose():
    body = json.dumps({"source": {"bucket": PARTNER, "key": "in/receipt.png"}, "tenant": "someone-else"})
    p = Pipeline(request_tenants=RequestTenants.parse("AIDAPARTNER=partner"))
    p.store.put(PARTNER, "in/receipt.png", text_png(), content_type="image/png")
    outcome = service(p).handle(body, "m-1", "AIDAPARTNER")
    assert outcome.decision is IntakeDecision.REJECTED
    code, _, data = failure_of(p)
    assert code == "request.tenant_not_allowed" and data["tenant"] is None
    assert p.queue.bodies == []


def test_a_mapped_sender_is_billed_to_its_tenant_and_a_role_sender_matches_without_its_session():
    body = json.dumps({"source": {"bucket": PARTNER, "key": "in/receipt.png"}})
    p = Pipeline(request_tenants=RequestTenants.parse("AROAPARTNERROLE=partner, *=shared"))
    p.store.put(PARTNER, "in/receipt.png", text_png(), content_type="image/png")
    service(p).handle(body, "m-1", "AROAPARTNERROLE:i-0abc")
    service(p).handle(
        json.dumps({"source": {"bucket": PARTNER, "key": "in/receipt.png"}, "correlation_id": "x"}), "m-2", "AIDAOTHER"
    )
    p.drain()
    assert sorted(e.data["tenant"] for e in p.bus.of_type("document.completed")) == ["partner", "shared"]


def test_an_unmapped_request_is_billed_by_the_tenant_rule_of_its_source_key():
    p = Pipeline(tenant_rule=TenantRule.parse("prefix"))
    p.store.put(PARTNER, "acme/receipt.png", text_png(), content_type="image/png")
    service(p).handle(json.dumps({"source": {"bucket": PARTNER, "key": "acme/receipt.png"}}), "m-1", "AIDAANY")
    p.drain()
    (completed,) = p.bus.of_type("document.completed")
    assert completed.data["tenant"] == "acme"
