"""The shell blocks of README.md and docs/*.md, run as a reader runs them: in order, in one shell.

The pages are read in the order README.md's documentation table lists them, after README.md itself, and
every command goes through one bash session, so a page may use what an earlier one started (`up &`) or
exported. Each command runs in a scratch copy of the project root (its folders linked, not copied), so
`out/`, `receipt.json` and the like never land in the checkout. The session starts with no AWS variables
and no AWS config: whatever a command needs, the docs must have exported first.

The convention, stated in README.md: a shell block runs unless the word after `bash` in its fence is one
of NOT_RUN; a trailing `# exits N` gives a command's expected exit code (0 otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = {"bash", "sh", "shell"}
# The fence words that leave a block out, and why; README.md explains them to readers.
NOT_RUN = {
    "deploy": "needs an AWS account",
    "online": "needs a DashScope key or a model server of one's own",
    "dev": "runs the test suite itself, or serves until stopped",
}
# What the scratch copy links from the checkout: what the commands and `make run` read.
PROJECT_ENTRIES = (
    ".ci",
    "Makefile",
    "pyproject.toml",
    "template.yaml",
    "samples",
    "events",
    "layers",
    "functions",
    "devkit",
)
COMMAND_TIMEOUT_S = 420.0
EXITS = re.compile(r"#\s*exits (\d+)\b")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    words: tuple[str, ...]
    text: str

    @property
    def runs(self) -> bool:
        return self.language in SHELL_LANGUAGES and not self.words

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True)
class Command:
    block: Block
    line: int
    text: str

    @property
    def expected_exit(self) -> int:
        found = EXITS.search(self.text)
        return int(found.group(1)) if found else 0

    def where(self) -> str:
        return f"{self.block.path.relative_to(REPO)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file (``` or ~~~, closed by a fence at least as long)."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^ {0,3}(`{3,}|~{3,})\s*(.*)$", lines[index])
        if not opening:
            index += 1
            continue
        fence, info = opening.group(1), opening.group(2).split()
        body: list[str] = []
        start = index + 1
        index += 1
        while index < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[index]):
            body.append(lines[index])
            index += 1
        assert index < len(lines), f"{path.relative_to(REPO)}:{start}: a fenced block is never closed"
        index += 1
        language = info[0] if info else ""
        blocks.append(Block(path, start, language, tuple(info[1:]), "\n".join(body)))
    return blocks


def commands(block: Block) -> list[Command]:
    """One command a line; a line ending in a backslash goes on with the next, as in the shell."""
    found: list[Command] = []
    pending: list[str] = []
    first = 0
    for offset, line in enumerate(block.text.splitlines(), start=block.line + 1):
        if not pending:
            first = offset
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        pending.append(line)
        if line.endswith("\\"):
            continue
        found.append(Command(block, first, "\n".join(pending)))
        pending = []
    assert not pending, f"{block.where()}: the block ends inside a continued line"
    return found


def pages() -> list[Path]:
    """README.md, then the pages of its documentation table, in the table's order."""
    readme = REPO / "README.md"
    listed = re.findall(r"^\| \[(docs/[^\]]+\.md)\]\(\1\) \|", readme.read_text(encoding="utf-8"), re.MULTILINE)
    return [readme, *(REPO / page for page in listed)]


# --- the convention, checked without running anything -------------------------------------------------------


def test_every_page_is_read_in_a_known_order() -> None:
    listed = pages()[1:]
    assert len(listed) == len(set(listed)), "README.md's documentation table lists a page twice"
    assert set(listed) == set((REPO / "docs").glob("*.md")), "README.md's documentation table must list every docs/*.md"


def test_every_block_is_run_or_marked() -> None:
    """A block is run, or says in its fence why not; an unknown word or an unlabelled fence is a mistake."""
    problems: list[str] = []
    runnable = 0
    for page in pages():
        for block in fenced_blocks(page):
            if not block.language:
                problems.append(f"{block.where()}: a fence without a language (bash, json, text, ...)")
            elif block.language in SHELL_LANGUAGES:
                unknown = [w for w in block.words if w not in NOT_RUN]
                if unknown or len(block.words) > 1:
                    problems.append(f"{block.where()}: fence words {block.words}; one of {sorted(NOT_RUN)} or none")
                if block.runs:
                    assert commands(block), f"{block.where()}: an empty shell block"
                    runnable += 1
            elif block.words and set(block.words) & set(NOT_RUN):
                problems.append(f"{block.where()}: {block.language} blocks are never run; the marker means nothing")
    assert not problems, "\n".join(problems)
    # The walk above reads the pages at all: README.md and the CLI page have runnable blocks.
    assert runnable >= 5, f"only {runnable} runnable shell blocks found"


def test_no_benchmark_figures_outside_benchmarks_md() -> None:
    """Timings and throughputs measured by `make bench` belong in BENCHMARKS.md, which is regenerated."""
    figure = re.compile(r"\d\s?(?:ms|µs)\b|pages/s|tokens/s|\d×|ideal C/L")
    found = [
        f"{page.relative_to(REPO)}:{number}: {line.strip()}"
        for page in pages()
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1)
        if figure.search(line)
    ]
    assert not found, "link to BENCHMARKS.md instead of repeating its figures:\n" + "\n".join(found)


# --- running them -------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    # Wall-clock start, to tell what the command wrote from what an earlier one left.
    started_at: float


class Session:
    """One bash, fed one command at a time; each command's output goes to files of its own."""

    def __init__(self, workdir: Path, scratch: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.scratch = scratch
        self.count = 0
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def run(self, text: str, timeout_s: float = COMMAND_TIMEOUT_S) -> Outcome:
        self.count += 1
        base = self.scratch / f"{self.count:03d}"
        script, out, err, code = (base.with_suffix(s) for s in (".sh", ".out", ".err", ".rc"))
        script.write_text(text + "\n", encoding="utf-8")
        # `source`, not a child shell: exports and background jobs stay in the session, as in a terminal.
        self._send(f"source {script} > {out} 2> {err} < /dev/null; echo $? > {code}.tmp; mv {code}.tmp {code}")
        started, started_at = time.monotonic(), time.time()
        while not code.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"the shell ended during:\n{text}\n{err.read_text(errors='replace')[-3000:]}")
            if time.monotonic() - started > timeout_s:
                raise AssertionError(
                    f"no end within {timeout_s:.0f} s:\n{text}\nstderr: {err.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.2)
        return Outcome(
            int(code.read_text().strip()),
            out.read_text(encoding="utf-8", errors="replace"),
            err.read_text(encoding="utf-8", errors="replace"),
            time.monotonic() - started,
            started_at,
        )

    def close(self) -> None:
        """Background jobs (`up`) get SIGTERM, as Ctrl-C would stop them, then the shell exits."""
        if self.process.poll() is None:
            try:
                self._send("kill -TERM $(jobs -p) 2> /dev/null; wait; exit")
                self.process.wait(timeout=90)
            except (OSError, subprocess.TimeoutExpired):
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()


# --- what the docs promise a command produces, beyond its exit code -----------------------------------------

Check = Callable[[Path, Outcome], None]


def _png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


def _json_text(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise AssertionError(f"{where} is not one JSON value ({error}): {text[:500]!r}") from None


def generic_checks(command: Command) -> list[Check]:
    """What a command's own words promise: `-o FILE` a picture, `> FILE` a file, `--json` JSON, `--out DIR` results."""
    text = command.text
    checks: list[Check] = []
    redirected = re.search(r"(?<![0-9&])>\s*([^\s&|;>]+)", text)
    if redirected and redirected.group(1) != "/dev/null":
        target = redirected.group(1)
        checks.append(lambda root, o: _fresh(root / target, o))
        if "--json" in text:
            checks.append(lambda root, _o: _json_file(root / target))
    elif "--json" in text:
        checks.append(lambda _root, o: _json_stdout(o))
    picture = re.search(r"\s-o\s+(\S+\.png)\b", text)
    if picture:
        checks.append(lambda root, o: _fresh(root / picture.group(1), o))
        checks.append(lambda root, _o: _png(root / picture.group(1)))
    out_dir = re.search(r"--out\s+(\S+)", text)
    if out_dir:
        checks.append(lambda root, o: _run_output(root / out_dir.group(1), o))
    if "--overlays" in text and out_dir:
        checks.append(lambda root, o: _overlays(root / out_dir.group(1), o))
    return checks


def _json_file(path: Path) -> None:
    _json_text(path.read_text(encoding="utf-8"), str(path))


def _json_stdout(outcome: Outcome) -> None:
    _json_text(outcome.stdout, "stdout")


def _fresh(path: Path, outcome: Outcome) -> None:
    assert path.is_file() and path.stat().st_size > 0, f"{path} was not written"
    assert _written_during([path], outcome), f"{path} is left from an earlier command"


def _written_during(paths: list[Path], outcome: Outcome) -> list[Path]:
    # A second's slack: some filesystems keep whole-second modification times.
    return [p for p in paths if p.stat().st_mtime >= outcome.started_at - 1]


def _run_output(out: Path, outcome: Outcome) -> None:
    """`run --out DIR`: DIR/results/*.json and DIR/events.jsonl, written by this run, not an earlier one."""
    results = _written_during(list((out / "results").glob("*.json")), outcome)
    assert results, f"this run wrote no result in {out}/results"
    for result in results:
        _json_text(result.read_text(encoding="utf-8"), str(result))
    assert _written_during([out / "events.jsonl"], outcome), f"this run did not write {out}/events.jsonl"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text(encoding="utf-8").splitlines() if line]
    assert any(e["event_type"] in {"document.completed", "document.failed"} for e in events), "no final event"


def _overlays(out: Path, outcome: Outcome) -> None:
    drawn = _written_during(list((out / "overlays").glob("*.png")), outcome)
    assert drawn, f"this run drew no picture in {out}/overlays"
    for picture in drawn:
        _png(picture)


def _make_run(root: Path, outcome: Outcome) -> None:
    # README: one result per document in out/results, every event in out/events.jsonl, a summary table.
    documents = [p for p in (root / "samples").rglob("*") if p.is_file() and not p.name.startswith(".")]
    results = _written_during(list((root / "out" / "results").glob("*.json")), outcome)
    assert len(results) == len(documents), f"{len(results)} results for {len(documents)} sample documents"
    events = [json.loads(line) for line in (root / "out" / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(e["event_type"] == "document.failed" for e in events) == 1, "samples/damaged/ should fail, alone"
    assert "document.failed" in outcome.stdout and "completed" in outcome.stdout


def _fault_summary(_root: Path, outcome: Outcome) -> None:
    # docs/local-stack.md: duplicates delivered are all dropped and no event id repeats.
    summary = " ".join(outcome.stdout.split())
    assert "repeated event ids 0" in summary, summary[-800:]
    duplicates = re.search(r"duplicates delivered (\d+), dropped (\d+)", summary)
    assert duplicates and duplicates.group(1) == duplicates.group(2), summary[-800:]
    assert re.search(r"faults injected [1-9]", summary), "--fault-rate injected no fault"
    # ... completed and failed add up to the documents, billing events to the pages recognized.
    counts = re.search(r"documents (\d+) · pages \d+ \(recognized (\d+)\)", summary)
    ends = re.search(r"completed (\d+) · failed (\d+) · billing events (\d+)", summary)
    assert counts and ends, summary[-800:]
    assert int(ends.group(1)) + int(ends.group(2)) == int(counts.group(1)), summary[-800:]
    assert ends.group(3) == counts.group(2), summary[-800:]


def _submitted(_root: Path, outcome: Outcome) -> None:
    answer = _json_text(outcome.stdout[outcome.stdout.index("{") :], "submit's answer")
    assert isinstance(answer, dict) and answer["event_type"] == "document.completed", answer
    assert answer["data"]["task"] == "table_parsing"


def _replayed(_root: Path, outcome: Outcome) -> None:
    assert re.match(r"moved \d+ messages? from http", outcome.stdout), outcome.stdout


def _invoked(_root: Path, outcome: Outcome) -> None:
    assert _json_text(outcome.stdout, "invoke's response") == {"batchItemFailures": []}


def _text(expected: str) -> Check:
    def check(_root: Path, outcome: Outcome) -> None:
        assert expected in outcome.stdout, f"{expected!r} not in {outcome.stdout[-800:]!r}"

    return check


def _uploaded_invoice_extracted(root: Path, _outcome: Outcome) -> None:
    """The metadata of docs/architecture.md really picks extraction with that schema."""
    import boto3

    state = json.loads((root / ".ocr-pipeline" / "up.json").read_text(encoding="utf-8"))
    s3 = boto3.client(
        "s3",
        endpoint_url=state["endpoint_url"],
        region_name=state["region"],
        aws_access_key_id=state["credentials"]["aws_access_key_id"],
        aws_secret_access_key=state["credentials"]["aws_secret_access_key"],
    )
    bucket = state["outputs"]["ResultBucketName"]
    deadline = time.monotonic() + 120
    while True:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="results/in/invoice.jpg/").get("Contents", [])
        if listed:
            break
        assert time.monotonic() < deadline, "the upload with metadata was never recognized"
        time.sleep(1)
    result = json.loads(s3.get_object(Bucket=bucket, Key=listed[0]["Key"])["Body"].read())
    text = json.dumps(result)
    assert '"key_information_extraction"' in text, text[:800]
    assert '"Invoice Number"' in text and '"Total"' in text, text[:800]


# A promise the prose makes about a command, by the command's words. Every one must match a runnable
# command, so none goes quietly unchecked when a page changes.
PROMISES: list[tuple[str, Check]] = [
    (r"^make run\b", _make_run),
    (r"ocr-pipeline recognize samples/receipt.png\s+#", _text("TOTAL")),
    (r"ocr-pipeline recognize samples/fax.tiff --all-pages", _text("page 3")),
    (r"ocr-pipeline estimate samples\s+#", _text("image tok")),
    (r"ocr-pipeline run samples --out out --fault-rate", _fault_summary),
    (r"s3 mb s3://partner-documents", _text("make_bucket: partner-documents")),
    (r"s3 cp samples/report.pdf s3://partner-documents/", _text("upload: samples/report.pdf")),
    (r"ocr-pipeline submit s3://partner-documents/.* --wait", _submitted),
    (r"ocr-pipeline replay ", _replayed),
    (r"ocr-pipeline invoke RecognizeFunction ", _invoked),
    (r"--metadata '\{", _uploaded_invoice_extracted),
]


def _scratch_project(root: Path) -> None:
    root.mkdir()
    for name in PROJECT_ENTRIES:
        (root / name).symlink_to(REPO / name)
    (root / ".venv").symlink_to(REPO / ".venv")


def _session_environment(root: Path) -> dict[str, str]:
    """The test's environment without AWS's variables or make's: a new reader's terminal in `root`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "PYTEST_", "OCR_")) and k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    }
    # No AWS config or credentials file either: the docs must export what the AWS CLI needs.
    env["AWS_CONFIG_FILE"] = str(root / ".no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(root / ".no-aws-credentials")
    env["PWD"] = str(root)
    return env


@pytest.mark.integration
@pytest.mark.timeout(1500)
def test_documented_commands_run_in_order(tmp_path: Path) -> None:
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("the docs' commands use .venv/bin: run the tests with the venv `make setup` made")
    if shutil.which("jq") is None:
        pytest.skip("docs/local-stack.md reads `up`'s JSON with jq, which is not installed")
    root = tmp_path / "project"
    _scratch_project(root)
    up_to_date = subprocess.run(["make", "-q", "setup"], cwd=root, capture_output=True, env=_session_environment(root))
    if up_to_date.returncode != 0:
        pytest.skip("`make setup` is not up to date; `make run` in the docs would install again")

    to_run = [c for page in pages() for block in fenced_blocks(page) if block.runs for c in commands(block)]
    unused = [pattern for pattern, _ in PROMISES if not any(re.search(pattern, c.text) for c in to_run)]
    assert not unused, f"promises about commands the docs no longer run: {unused}"

    commands_dir = tmp_path / "commands"
    commands_dir.mkdir()
    session = Session(root, commands_dir, _session_environment(root))
    timings: list[str] = []
    try:
        for command in to_run:
            outcome = session.run(command.text)
            timings.append(f"{outcome.seconds:6.1f} s  {command.where()}  {command.text.splitlines()[0][:90]}")
            assert outcome.exit_code == command.expected_exit, (
                f"{command.where()}: exit {outcome.exit_code}, expected {command.expected_exit}\n$ {command.text}\n"
                f"stdout: {outcome.stdout[-2000:]}\nstderr: {outcome.stderr[-3000:]}"
            )
            checks = generic_checks(command) + [c for p, c in PROMISES if re.search(p, command.text)]
            for check in checks:
                try:
                    check(root, outcome)
                except AssertionError as error:
                    raise AssertionError(f"{command.where()}: {error}\n$ {command.text}") from None
    finally:
        session.close()
        print("\n".join(timings))


def test_the_readme_cost_line_is_the_last_benchmark_s() -> None:
    """README.md's one line on the cost per page repeats BENCHMARKS.md's goal row; both come from report.json."""
    cost = json.loads((REPO / "benchmarks" / "report.json").read_text(encoding="utf-8"))["results"]["cost"]
    deployed = cost["rows"][0]["configuration"]
    (row,) = [
        r
        for r in cost["rows"]
        if r["configuration"] == deployed and r["input"] == "pdf" and r["latency_ms"] == cost["goal_latency_ms"]
    ]
    line = next(
        line
        for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
        if "in AWS requests and Lambda time" in line
    )
    assert f"({row['ratio'] * 100:.1f} %)" in line, line
