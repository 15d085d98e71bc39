"""`ocr-pipeline run` exits with one of its documented codes, even when it stops the stack mid-work.

A run whose timeout passes stops the local stack while the emulator is still reading pages in its OCR
engine (onnxruntime and OpenCV, which compute without the GIL). A thread still in there when the
interpreter finalized would abort the process (134, "terminate called without an active exception")
after the report was printed.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from ocr_devkit.emulator import EmulatorServer
from PIL import Image

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
# README and docs/cli.md: success, a document failed, bad command line, configuration error, interrupted.
DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4, 130}
# Far more pages than the run has time for: the emulator still has pages to read when the stack stops.
PAGES = 30
NATIVE_PATH = "/services/aigc/multimodal-generation/generation"


def write_pdf(path: Path, pages: int) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype("DejaVuSans.ttf", 24)
    images = []
    for number in range(1, pages + 1):
        page = Image.new("L", (620, 877), 255)
        draw = ImageDraw.Draw(page)
        for line in range(12):
            draw.text((50, 60 + 60 * line), f"Page {number}, line {line + 1} of the long report", fill=0, font=font)
        images.append(page)
    images[0].save(path, save_all=True, append_images=images[1:], resolution=75)
    return path


@pytest.mark.timeout(600)
def test_a_fault_run_stopped_while_pages_are_being_read_exits_1_after_its_report(tmp_path):
    # Given a small sample and a PDF too long for the run's timeout, with injected faults and duplicates
    pdf = write_pdf(tmp_path / "long report.pdf", PAGES)
    out = tmp_path / "out"

    # When the run gives up on the PDF and stops the stack while its pages are still being recognized
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ocr_devkit.cli",
            "run",
            str(ROOT / "samples" / "receipt.png"),
            str(pdf),
            "--out",
            str(out),
            "--json",
            "--timeout",
            "1",
            "--fault-rate",
            "0.5",
            "--duplicate-rate",
            "0.5",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )

    # Then it exits 1, as for any document that did not complete, and not with an abort
    assert result.returncode in DOCUMENTED_EXIT_CODES, result.stderr[-2000:]
    assert result.returncode == 1, result.stderr[-2000:]
    # And the report it printed says the PDF ran out of time
    report = json.loads(result.stdout)
    statuses = {document["key"]: document["status"] for document in report["documents"]}
    assert statuses["long report.pdf"] == "timed_out"
    # And its pages are counted, next to whatever billing events its settled pages caused
    (long_report,) = [d for d in report["documents"] if d["key"] == "long report.pdf"]
    if "settled" in (long_report.get("error_message") or ""):
        assert long_report["pages"] == PAGES


class _HeldEngine:
    """An OCR engine whose calls last until the test lets them go; it notes when each call began and ended."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def recognize(self, image: object, *, correct_rotation: bool = False) -> list[object]:
        self.calls += 1
        self.entered.set()
        try:
            self.release.wait(30)
            return []
        finally:
            self.journal.append("engine call ended")


def _image_body(shade: int) -> dict[str, object]:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 32), (shade, shade, shade)).save(buffer, "PNG")
    image = f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"
    return {"model": "qwen-vl-ocr", "input": {"messages": [{"role": "user", "content": [{"image": image}]}]}}


def test_stopping_the_emulator_waits_for_the_engine_call_in_progress_and_starts_no_other():
    # Given an emulator reading one image while two more requests wait for its engine
    journal: list[str] = []
    engine = _HeldEngine(journal)
    # (other tests' emulators may still serve keep-alive connections in this process: only this one's count)
    before = set(threading.enumerate())
    emulator = EmulatorServer(engine=engine).start()
    url = emulator.native_base + NATIVE_PATH

    def call(shade: int) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the stop cuts the connections
            httpx.post(url, headers={"Authorization": "Bearer any"}, json=_image_body(shade), timeout=30)

    callers = [threading.Thread(target=call, args=(shade,)) for shade in (10, 120, 230)]
    for caller in callers:
        caller.start()
    assert engine.entered.wait(30)
    while emulator.stats["requests"]["native"] < len(callers):
        time.sleep(0.02)

    # When it is stopped, and the engine's call ends only once the stop has cut every connection
    stopper = threading.Thread(target=lambda: (emulator.stop(), journal.append("stopped")))
    stopper.start()
    for caller in callers:
        caller.join(30)
    engine.release.set()
    stopper.join(30)

    # Then stop() returned after the engine's call had ended, the waiting requests never reached the
    # engine, and no request thread is left to be inside it when the interpreter finalizes
    assert journal == ["engine call ended", "stopped"]
    assert engine.calls == 1
    assert not [t for t in set(threading.enumerate()) - before if t.name == "dashscope-emulator-request"]


@pytest.mark.timeout(600)
def test_a_run_terminated_while_pages_are_being_read_stops_in_order_and_exits_130(tmp_path):
    # Given a run busy recognizing a long PDF
    pdf = write_pdf(tmp_path / "long report.pdf", PAGES)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "ocr_devkit.cli", "run", str(pdf), "--out", str(out), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 300
        while not (out / "logs" / "RecognizeFunction.log").exists():
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the recognize function never started"
            time.sleep(0.5)

        # When it is sent SIGTERM (as a service manager or `timeout` stops it)
        process.terminate()
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    # Then it stops as on Ctrl-C, with the documented 130, not killed by the signal (-15, 143) or aborted (134)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr
