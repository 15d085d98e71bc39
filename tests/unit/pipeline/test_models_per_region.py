"""Each region offers the snapshots its model table lists; anything else is a configuration error.

From the vendor's page: Singapore (intl) and Virginia (us) list `qwen-vl-ocr` and `qwen-vl-ocr-2025-11-20`;
Beijing (cn) lists those, `qwen-vl-ocr-latest` and the 2025-08-28, 2025-04-13 and 2024-10-28 snapshots.
`allow_unlisted_model` admits a model the table does not list yet, with its patch size given, at cost null.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ocr_devkit.cli import main
from ocr_devkit.stack.cfn import resolve_template
from ocr_pipeline.adapters.dashscope import OcrServiceSettings, WireProtocol
from ocr_pipeline.bootstrap import read_pipeline_settings
from ocr_pipeline.catalog import MODELS, Region, offered_model
from ocr_pipeline.errors import ConfigurationError
from ocr_pipeline.pipeline.request_intake import RequestService
from ocr_pipeline.pipeline.sources import SourcePolicy
from ocr_pipeline.pipeline.upload import UploadedObject
from ocr_pipeline.recognition import Recognizer
from ocr_pipeline.usage import Usage
from PIL import Image

from tests.support.fakes import INPUT, RESULTS, FakeOcrService, Pipeline, text_png

ROOT = Path(__file__).resolve().parents[3]
# The template refuses a DashScope deploy without a key.
WITH_KEY = {"ApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:dashscope-AbCdEf"}
ENV = {"RESULT_BUCKET": "r", "TOPIC_ARN": "arn:aws:sns:us-east-1:1:t", "PAGE_QUEUE_URL": "q", "JOBS_TABLE": "j"}
OLD_SNAPSHOTS = ["qwen-vl-ocr-2025-08-28", "qwen-vl-ocr-2025-04-13", "qwen-vl-ocr-2024-10-28"]


@pytest.mark.parametrize("region", [Region.INTL, Region.US])
@pytest.mark.parametrize("model", ["qwen-vl-ocr-latest", *OLD_SNAPSHOTS, "qwen-vl-ocr-0828", "qwen-vl-ocr-1028"])
def test_singapore_and_virginia_do_not_offer_latest_or_the_older_snapshots(region, model):
    with pytest.raises(ConfigurationError) as caught:
        offered_model(model, region)
    assert caught.value.code == "config.invalid"
    assert "qwen-vl-ocr-2025-11-20" in caught.value.message  # it says what the region offers


@pytest.mark.parametrize("region", list(Region))
@pytest.mark.parametrize("model", ["qwen-vl-ocr", "qwen-vl-ocr-2025-11-20", "qwen-vl-ocr-1120"])
def test_every_region_offers_the_stable_name_and_2025_11_20(region, model):
    assert offered_model(model, region).name in ("qwen-vl-ocr", "qwen-vl-ocr-2025-11-20")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_beijing_offers_every_snapshot(model):
    assert offered_model(model, Region.CN).name == model


def test_a_misspelt_model_is_refused_everywhere():
    for region in Region:
        with pytest.raises(ConfigurationError, match="not a Qwen-OCR model"):
            offered_model("qwen-vl-orc-2025-11-20", region)


def test_client_settings_refuse_a_model_the_region_does_not_offer():
    with pytest.raises(ConfigurationError) as caught:
        OcrServiceSettings(region=Region.INTL, model="qwen-vl-ocr-latest")
    assert caught.value.code == "config.invalid" and "intl" in caught.value.message
    with pytest.raises(ConfigurationError):
        OcrServiceSettings.from_env({"OCR_REGION": "us", "OCR_MODEL": "qwen-vl-ocr-2025-08-28"})
    # The compatible mode of DashScope is DashScope too.
    with pytest.raises(ConfigurationError):
        OcrServiceSettings(protocol=WireProtocol.OPENAI, region=Region.INTL, model="qwen-vl-ocr-latest")
    assert OcrServiceSettings(region=Region.CN, model="qwen-vl-ocr-latest").model == "qwen-vl-ocr-latest"


def test_a_function_does_not_start_with_a_model_its_region_does_not_offer():
    with pytest.raises(ConfigurationError) as caught:
        read_pipeline_settings({**ENV, "OCR_REGION": "intl", "OCR_MODEL": "qwen-vl-ocr-latest"})
    assert caught.value.code == "config.invalid"


def test_a_self_hosted_server_may_name_any_model():
    settings = OcrServiceSettings(
        protocol=WireProtocol.OPENAI, base_url="http://gpu:8000/v1", model="Qwen/Qwen2.5-VL-7B"
    )
    assert settings.model_choice().spec.patch == 32 and not settings.model_choice().unlisted


def test_recognize_exits_3_for_a_model_the_region_does_not_offer(tmp_path, capsys):
    image = tmp_path / "page.png"
    Image.new("L", (200, 100), 255).save(image)
    code = main(["recognize", str(image), "--model", "qwen-vl-ocr-latest", "--region", "intl"])
    assert code == 3
    assert "config.invalid" in capsys.readouterr().err


# --- a job that names its own model and region -------------------------------------------------------


def test_a_request_naming_a_model_its_region_does_not_offer_is_never_sent():
    # Given a request for qwen-vl-ocr-latest in intl
    p = Pipeline(ocr=FakeOcrService())
    p.store.put(INPUT, "a.png", text_png(), content_type="image/png")
    body = json.dumps({"source": {"bucket": INPUT, "key": "a.png"}, "model": "qwen-vl-ocr-latest", "region": "intl"})
    RequestService(p.settings, p.intake, None, SourcePolicy(buckets=frozenset({INPUT}))).handle(body, "m-1")
    # Then it is refused at intake: no page message, nothing sent, one answer with the request's code
    assert p.queue.bodies == []
    p.drain()
    assert p.ocr.calls == []
    (failed,) = p.bus.of_type("document.failed")
    assert failed.data["error"]["code"] == "request.invalid"
    assert "not offered in region intl" in failed.data["error"]["message"]
    assert p.bus.of_type("usage.recorded") == []


def test_a_recognizer_checks_settings_copied_with_another_region():
    settings = OcrServiceSettings(api_key="k").model_copy(update={"model": "qwen-vl-ocr-0413", "region": Region.US})
    with pytest.raises(ConfigurationError):
        Recognizer(FakeOcrService(), settings.target())


# --- the escape: allow_unlisted_model ----------------------------------------------------------------


def test_an_unlisted_model_needs_its_patch_size():
    env = {"OCR_REGION": "intl", "OCR_MODEL": "qwen-vl-ocr-2026-03-01", "OCR_ALLOW_UNLISTED_MODEL": "true"}
    with pytest.raises(ConfigurationError, match="patch size"):
        OcrServiceSettings.from_env(env)
    settings = OcrServiceSettings.from_env({**env, "OCR_UNLISTED_MODEL_PATCH": "32"})
    choice = settings.model_choice()
    assert choice.unlisted and choice.spec.patch == 32 and "cost unknown" in (choice.warning or "")


def test_an_unlisted_known_model_must_be_given_its_true_patch():
    env = {"OCR_REGION": "intl", "OCR_MODEL": "qwen-vl-ocr-2025-08-28", "OCR_ALLOW_UNLISTED_MODEL": "true"}
    with pytest.raises(ConfigurationError, match="28 px"):
        OcrServiceSettings.from_env({**env, "OCR_UNLISTED_MODEL_PATCH": "32"})
    assert OcrServiceSettings.from_env({**env, "OCR_UNLISTED_MODEL_PATCH": "28"}).model_choice().spec.patch == 28


def test_an_unlisted_model_is_sent_and_its_cost_is_null_with_a_warning():
    # Given a stack allowed to send a model intl does not list
    p = Pipeline(ocr=FakeOcrService())
    ocr = OcrServiceSettings(
        api_key="test",
        model="qwen-vl-ocr-2026-03-01",
        allow_unlisted_model=True,
        unlisted_model_patch=32,
    )
    p.ocr_settings = ocr
    p.settings = p.settings.model_copy(update={"ocr": ocr.defaults()})
    p.upload.settings = p.intake.settings = p.pages.settings = p.settlement.settings = p.settings
    # When a page is recognized
    p.store.put(INPUT, "a.png", text_png(), content_type="image/png")
    job_id = p.upload.accept(UploadedObject(bucket=INPUT, key="a.png")).job_id
    p.drain()
    # Then it was sent, its usage billed at cost null, and the page says why
    assert len(p.ocr.calls) == 1 and p.ocr.calls[0].model.name == "qwen-vl-ocr-2026-03-01"
    (usage,) = p.bus.of_type("usage.recorded")
    assert usage.data["cost"] is None and usage.data["input_tokens"] > 0
    document = json.loads(p.store.get_text(RESULTS, f"results/a.png/{job_id}.json"))
    assert document["cost"] is None
    assert any("not listed for region intl" in w for w in document["pages"][0]["warnings"])


def test_a_listed_model_is_priced_as_before():
    recognizer = Recognizer(FakeOcrService(), OcrServiceSettings(api_key="k").target())
    assert recognizer.price(Usage(input_tokens=1000, output_tokens=100, image_tokens=900)) is not None
    assert recognizer.warnings == []


def test_the_template_parameters_reach_every_function_and_default_to_off():
    resolved = resolve_template(ROOT / "template.yaml", stack_name="t", parameters=WITH_KEY)
    for function in resolved.of_type("AWS::Serverless::Function"):
        variables = {k: str(v) for k, v in resolved.properties(function.logical_id)["Environment"]["Variables"].items()}
        assert (variables["OCR_ALLOW_UNLISTED_MODEL"], variables["OCR_UNLISTED_MODEL_PATCH"]) == ("false", "0")
        ocr = OcrServiceSettings.from_env(variables)
        assert ocr.allow_unlisted_model is False and ocr.unlisted_model_patch is None
    overridden = resolve_template(
        ROOT / "template.yaml",
        stack_name="t",
        parameters={
            **WITH_KEY,
            "AllowUnlistedModel": "true",
            "UnlistedModelPatch": "28",
            "DefaultModel": "qwen-vl-ocr-0828",
        },
    )
    variables = {k: str(v) for k, v in overridden.properties("RecognizeFunction")["Environment"]["Variables"].items()}
    assert OcrServiceSettings.from_env(variables).model_choice().spec.patch == 28
