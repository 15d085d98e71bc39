"""Memory sized to the work: what each MemorySize buys the recognize function, and what it needs.

On Lambda, CPU is proportional to memory: 1,769 MB buys one vCPU, so 512 MB buys 29 % of one. A
page's preparation (render + encode of a dense A4 PDF page, or of a 12 MP phone photo) is timed
two ways at the share of each candidate size:

* **limited**: in a fresh process that the kernel holds to that share of one CPU (a CPU cgroup of
  its own with a CFS bandwidth quota: cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`, quota = share x
  period). The share the process really got (its CPU time over its wall time) is reported beside it,
  since other work on the machine can take more than the quota leaves;
* **model**: the work's CPU time at one full core x 1769 / MB, which is what a quota enforces on an
  otherwise idle machine. Where no cgroup can be made (no root, a read-only hierarchy), only this.

The choice rests on the model, which a busy machine cannot distort much; the limited figure checks
it where the machine leaves the process the share it was given.

Memory: a recognize instance works on up to OcrCallsPerInstance records at once, each preparing
its pages one after another and holding every prepared page (its image, and the request body that
carries it) until the model answers. So a fresh process, with the template's function variables
(malloc's thresholds among them), runs k threads that each prepare a chunk of pages
(PageChunkSize) and hold them all; its resident high-water mark, from its start, is what the
instance needs beside Lambda's own runtime. The photo stands for every heavy page: a photo sent
alone is a job of one page, but a PDF of photographed pages is a message of several.

The choice: per page, an instance is billed MemorySize x max(L / k, preparation time at that
share), L being the model's latency and k the calls in flight: while the model is the wait, a
smaller size costs less; once preparation takes longer than L / k, the CPU is the bottleneck and
the GB-s per page stop falling (the same CPU time, at a smaller share, takes longer). The
smallest size whose memory fits, with headroom, and whose dense-PDF preparation stays under L / k
at the shortest latency measured is chosen.

Timed on this machine's CPU (x86_64 here), not on Graviton: the shares carry over, the per-core
speed of the functions' arm64 CPU may differ.

python -m benchmarks.memory_share   (prints the result as JSON)
"""

from __future__ import annotations

import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from ocr_devkit.run import TEMPLATE
from ocr_devkit.stack.cfn import load_template

from .cold_start import function_variables

ROOT = Path(__file__).resolve().parents[1]
# The sizes asked about, and the ones between them: Lambda takes any size in 1 MB steps.
MEMORY_SIZES_MB = (512, 768, 1024, 1280, 1536)
# Lambda: "at 1,769 MB, a function has the equivalent of one vCPU".
FULL_VCPU_MB = 1769
LATENCIES_S = (2.0, 8.0)
# The cost goal's latency (issue: AWS at most 5 % of Qwen's bill per dense page at 8 s).
GOAL_LATENCY_S = 8.0
CALLS_IN_FLIGHT = (8, 16, 32)
# What a size must leave free beyond the measured peak: Lambda's runtime process, and growth.
HEADROOM = 0.25
CFS_PERIOD_US = 100_000
REPEATS = {"pdf": 8, "jpeg": 3}
WORKLOADS = {"pdf": "dense A4 PDF page (vector text)", "jpeg": "12 MP phone photo (JPEG)"}
# What the recognize handler imports before any page: its runtime resident memory starts there.
RECOGNIZE_IMPORTS = (
    "boto3",
    "httpx",
    "aws_lambda_powertools.utilities.batch",
    "ocr_pipeline.bootstrap",
    "ocr_pipeline.pdf",
    "ocr_pipeline.imaging",
)
_STATUS = Path("/proc/self/status")


# --- in the child process ------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def _page_work(name: str, source: Path) -> Callable[[int], bytes]:
    """One page's preparation from the source file (read as a download would be): the image it sends."""
    from ocr_pipeline.imaging import prepare_image
    from ocr_pipeline.pdf import prepare_pdf_page

    from .workloads import DEFAULT_BUDGET, PDF_PAGES

    if name == "pdf":
        document = source.read_bytes()
        return lambda index: prepare_pdf_page(document, index % PDF_PAGES + 1, DEFAULT_BUDGET).data
    # Each record downloads its own source: the photo is read again for each preparation.
    return lambda index: prepare_image(source.read_bytes(), DEFAULT_BUDGET).data


def child_timing(name: str, source: Path, repeats: int) -> dict[str, Any]:
    work = _page_work(name, source)
    work(0)  # warm, as a warm instance is
    wall, cpu = [], []
    for index in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        work(index)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return {"wall_ms": [round(t, 1) for t in wall], "cpu_ms": [round(t, 1) for t in cpu]}


def child_in_flight(name: str, source: Path, records: int, pages_per_record: int) -> dict[str, Any]:
    """`records` threads prepare their pages under the instance's bounds, and hold them as calls in flight do.

    As the recognize function does (page_recognition.py): a page is prepared only once the instance has
    room for it (at most `records` + 1 pages prepared and unanswered, `records` being the calls in flight)
    and at most PAGES_PREPARED_AT_ONCE at a time; a prepared page goes to the model while the images with
    it fit IMAGE_BYTES_WITH_THE_MODEL (or it is alone). No call is answered here, so the instance fills up
    and stops: every page holds its image, and each page with the model what the OCR client holds during
    a call (the image's data URL and the JSON payload that carries it). That is the instance's fullest
    moment.
    """
    import importlib

    from ocr_pipeline.pipeline.concurrency import ByteBudget
    from ocr_pipeline.pipeline.page_recognition import IMAGE_BYTES_WITH_THE_MODEL, PAGES_PREPARED_AT_ONCE

    for module in RECOGNIZE_IMPORTS:
        importlib.import_module(module)
    imported_kib = _status_kib("VmRSS")
    work = _page_work(name, source)
    held: list[bytes | str] = []
    lock = threading.Lock()
    start = threading.Barrier(records)
    unanswered = threading.BoundedSemaphore(records + 1)
    preparing = threading.BoundedSemaphore(PAGES_PREPARED_AT_ONCE)
    with_the_model = ByteBudget(IMAGE_BYTES_WITH_THE_MODEL)
    # Claims on the budget stay held to the end, as calls that are never answered would hold them.
    claims = ExitStack()
    calls = [0]

    def record(number: int) -> None:
        start.wait()
        for page in range(pages_per_record):
            # Without an answer no room comes free: once the instance is full, its records wait, and stop.
            if not unanswered.acquire(blocking=False):
                return
            with preparing:
                image = work(number * pages_per_record + page)
            with lock:
                goes = claims.enter_context(with_the_model.claim(len(image), deadline=time.monotonic()))
                held.append(image)
            if not goes:
                # Waits for room with the model, which no answer here ever makes: it holds its image only.
                continue
            data_url = "data:image/png;base64," + base64.b64encode(image).decode("ascii")
            payload = json.dumps({"image": data_url}, ensure_ascii=False).encode("utf-8")
            with lock:
                held.extend([data_url, payload])
                calls[0] += 1

    threads = [threading.Thread(target=record, args=(number,)) for number in range(records)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claims.close()
    return {
        "imported_rss_kib": imported_kib,
        "peak_rss_kib": _status_kib("VmHWM"),
        "held_kib": sum(len(item) for item in held) // 1024,
        "pages": len(held) - 2 * calls[0],
        "calls": calls[0],
    }


# --- CPU share ------------------------------------------------------------------------------------


class CpuQuota:
    """A CPU cgroup of its own, holding the processes put in it to `share` of one CPU (CFS bandwidth)."""

    def __init__(self, group: Path, procs: Path) -> None:
        self.group, self.procs = group, procs

    @classmethod
    def create(cls, share: float, name: str) -> CpuQuota | str:
        """The cgroup, or why none could be made here."""
        quota = max(1000, round(share * CFS_PERIOD_US))
        v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")
        try:
            if "cpu" in _read(v2 / "cgroup.controllers").split():
                if "cpu" not in _read(v2 / "cgroup.subtree_control").split():
                    (v2 / "cgroup.subtree_control").write_text("+cpu")
                group = v2 / name
                group.mkdir()
                (group / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
            elif (v1 / "cpu.cfs_quota_us").is_file():
                group = v1 / name
                group.mkdir()
                (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                return "no CPU controller in /sys/fs/cgroup (cgroup v2 cpu.max or v1 cpu.cfs_quota_us)"
        except OSError as exc:
            return f"a CPU cgroup could not be made: {exc}"
        return cls(group, group / "cgroup.procs")

    def enter(self) -> None:
        """Run in the child between fork and exec: the process moves itself into the group."""
        self.procs.write_text(str(os.getpid()))

    def remove(self) -> None:
        with suppress(OSError):
            self.group.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def write_sources(folder: Path) -> dict[str, Path]:
    """The inputs, made once here, so that making them adds nothing to a child's resident memory."""
    from .documents import phone_photo_jpeg, text_pdf
    from .workloads import PDF_PAGES

    sources = {"pdf": folder / "dense.pdf", "jpeg": folder / "photo.jpg"}
    sources["pdf"].write_bytes(text_pdf(PDF_PAGES))
    sources["jpeg"].write_bytes(phone_photo_jpeg())
    return sources


def _child(arguments: list[str], quota: CpuQuota | None, environment: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_share", *arguments],
        cwd=ROOT,
        env=environment,
        preexec_fn=quota.enter if quota else None,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed: {result.stderr.strip()[-1500:]}")
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


# --- the measurement --------------------------------------------------------------------------------


def share_of(memory_mb: int) -> float:
    return min(1.0, memory_mb / FULL_VCPU_MB)


def timing(name: str, source: Path, log: Any) -> dict[str, Any]:
    environment = {**os.environ, **function_variables()}
    log(f"  {WORKLOADS[name]}: {REPEATS[name]} pages at one full core")
    full = _child(["timing", name, str(source), str(REPEATS[name])], None, environment)
    cpu_ms = statistics.median(full["cpu_ms"])
    result: dict[str, Any] = {
        "full_core_wall_ms": round(statistics.median(full["wall_ms"]), 1),
        "full_core_cpu_ms": round(cpu_ms, 1),
        "sizes": {},
    }
    for memory in MEMORY_SIZES_MB:
        share = share_of(memory)
        entry: dict[str, Any] = {"share": round(share, 3), "model_ms": round(cpu_ms / share, 1)}
        quota = CpuQuota.create(share, f"ocr-bench-{os.getpid()}-{memory}")
        if isinstance(quota, str):
            entry["limited"] = {"unavailable": quota}
        else:
            log(f"  {WORKLOADS[name]}: {REPEATS[name]} pages held to the CPU share of {memory} MB ({share:.2f})")
            try:
                limited = _child(["timing", name, str(source), str(REPEATS[name])], quota, environment)
            finally:
                quota.remove()
            wall = statistics.median(limited["wall_ms"])
            entry["limited"] = {
                "median_ms": round(wall, 1),
                "achieved_share": round(sum(limited["cpu_ms"]) / sum(limited["wall_ms"]), 3),
                "wall_ms": limited["wall_ms"],
            }
        result["sizes"][str(memory)] = entry
    return result


def in_flight_memory(
    name: str, source: Path, records: int, pages_per_record: int, log: Any, *, template_malloc: bool = True
) -> dict[str, Any]:
    """Peak resident memory of `records` records of `pages_per_record` pages, at the instance's fullest moment.

    With the template's function variables (malloc's thresholds among them), as the function runs;
    without them (glibc's defaults) for comparison, since freed memory each thread's arena keeps
    under those thresholds shows up here as resident memory.
    """
    how = "the template's variables" if template_malloc else "glibc's malloc defaults"
    log(f"  {WORKLOADS[name]}: {records} records of {pages_per_record} pages, the instance full ({how})")
    environment = {**os.environ, **function_variables()}
    if not template_malloc:
        environment = {key: value for key, value in environment.items() if not key.startswith("MALLOC_")}
    probe = _child(["in-flight", name, str(source), str(records), str(pages_per_record)], None, environment)
    return {
        "workload": name,
        "records": records,
        "pages_per_record": pages_per_record,
        "pages_held": probe["pages"],
        "calls_held": probe["calls"],
        "template_malloc": template_malloc,
        "held_mb": round(probe["held_kib"] / 1024, 1),
        "imported_mb": round(probe["imported_rss_kib"] / 1024, 1),
        "peak_mb": round(probe["peak_rss_kib"] / 1024, 1),
    }


def handler_memory(log: Any) -> dict[str, float]:
    """Resident memory (high-water mark) of importing each function's handler in a fresh process.

    The functions other than recognize read documents through ranged reads and spool downloads to
    /tmp past a few MB, so their import is most of what they hold.
    """
    template = load_template(TEMPLATE)
    peaks: dict[str, float] = {}
    probe = "import app, re\nprint(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"
    for name, resource in template.resources.items():
        code = (resource.get("Properties") or {}).get("CodeUri")
        if resource.get("Type") != "AWS::Serverless::Function" or not isinstance(code, str):
            continue
        log(f"  importing {name}'s handler")
        environment = {
            **os.environ,
            **function_variables(),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        result = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=template.directory / code,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode == 0:
            peaks[name] = round(int(result.stdout.split()[-1]) / 1024, 1)
    return peaks


def template_defaults() -> dict[str, Any]:
    template = load_template(TEMPLATE)
    parameters = template.body.get("Parameters", {})
    functions = {
        name: resource.get("Properties", {}).get("MemorySize")
        for name, resource in template.resources.items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }
    return {
        "page_chunk_size": int(parameters["PageChunkSize"]["Default"]),
        "calls_per_instance_default": int(parameters["OcrCallsPerInstance"]["Default"]),
        "calls_per_instance_allowed": [
            int(v) for v in parameters.get("OcrCallsPerInstance", {}).get("AllowedValues", [])
        ],
        "memory_mb": functions,
    }


def gb_seconds_per_page(memory_mb: int, preparation_ms: float, latency_s: float, calls: int) -> float:
    """An instance is billed while it waits for its k calls, or while it prepares, whichever is longer."""
    return memory_mb / 1024 * max(latency_s / calls, preparation_ms / 1000)


def choose(prep: dict[str, Any], memory: dict[str, Any], default_calls: int) -> dict[str, Any]:
    """The size that costs least per dense PDF page at the goal's latency, among those that hold the peak.

    GB-s per page fall with the size while the calls are the wait (M x L/k), and stop falling once
    preparation is (M x CPU time / share, the same at any size under one vCPU): sizes on that floor cost
    the same, and the largest of them prepares fastest, so a tie goes to the larger size.
    """
    busiest = max(entry["peak_mb"] for entry in memory.values() if entry["template_malloc"])
    costs: dict[str, Any] = {}
    for size in MEMORY_SIZES_MB:
        costs[str(size)] = {
            f"{name} L={latency:g}s k={calls}": round(
                gb_seconds_per_page(size, prep[name]["sizes"][str(size)]["model_ms"], latency, calls), 3
            )
            for name in prep
            for latency in LATENCIES_S
            for calls in CALLS_IN_FLIGHT
        }
    goal_key = f"pdf L={GOAL_LATENCY_S:g}s k={default_calls}"
    fitting = [size for size in MEMORY_SIZES_MB if busiest * (1 + HEADROOM) <= size]
    chosen = min(fitting, key=lambda size: (costs[str(size)][goal_key], -size)) if fitting else MEMORY_SIZES_MB[-1]
    return {
        "chosen_mb": chosen,
        # False: even the largest size measured does not hold the peak, and is chosen only as the largest.
        "fits": bool(fitting),
        "busiest_peak_mb": busiest,
        "headroom": HEADROOM,
        "goal": goal_key,
        "wait_per_call_s": GOAL_LATENCY_S / default_calls,
        "gb_s_per_page": costs,
        "bottleneck_sizes": {
            name: [
                size
                for size in MEMORY_SIZES_MB
                if prep[name]["sizes"][str(size)]["model_ms"] / 1000 > GOAL_LATENCY_S / default_calls
            ]
            for name in prep
        },
    }


def measure(log: Any = print) -> dict[str, Any]:
    defaults = template_defaults()
    chunk = defaults["page_chunk_size"]
    with tempfile.TemporaryDirectory(prefix="ocr-bench-share-") as folder:
        sources = write_sources(Path(folder))
        prep = {name: timing(name, sources[name], log) for name in WORKLOADS}
        # As many records as an instance takes at once: the template's default calls in flight, and the most it
        # allows (the size must hold that too, since the calls are a parameter and the size is not).
        most = max(defaults["calls_per_instance_allowed"] or CALLS_IN_FLIGHT)
        cases = [(name, 1, 1) for name in WORKLOADS]
        for calls in sorted({defaults["calls_per_instance_default"], most}):
            cases += [(name, calls, 1) for name in WORKLOADS] + [(name, calls, chunk) for name in WORKLOADS]
        memory = {
            f"{name} {records}x{pages}": in_flight_memory(name, sources[name], records, pages, log)
            for name, records, pages in cases
        }
        busiest = max(memory, key=lambda key: memory[key]["peak_mb"])
        entry = memory[busiest]
        memory[f"{busiest} glibc defaults"] = in_flight_memory(
            entry["workload"],
            sources[entry["workload"]],
            entry["records"],
            entry["pages_per_record"],
            log,
            template_malloc=False,
        )
    choice = choose(prep, memory, defaults["calls_per_instance_default"])
    return {
        "handler_import_mb": handler_memory(log),
        "full_vcpu_mb": FULL_VCPU_MB,
        "cfs_period_ms": CFS_PERIOD_US / 1000,
        "template": defaults,
        "preparation": prep,
        "in_flight": memory,
        "choice": choice,
        "met": defaults["memory_mb"].get("RecognizeFunction") == choice["chosen_mb"],
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "timing":
        print(json.dumps(child_timing(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "in-flight":
        print(json.dumps(child_in_flight(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
    else:
        print(json.dumps(measure(lambda message: print(message, file=sys.stderr, flush=True)), indent=2))
