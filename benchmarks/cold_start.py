"""Cold start: the built layer's unzipped size, and the import time of each handler on top of it.

The layer is built the way `sam build` builds it (BuildMethod python3.12): `pip install -r
requirements.txt` into a folder, plus the `ocr_pipeline` package. Two builds:

* for Lambda (CPython 3.12, manylinux x86_64 wheels), whose size is the figure, and
* for this machine's Python, which a fresh interpreter imports each handler from, with the
  function's folder first, the layer next and boto3 (the runtime's) last, as Lambda orders them.

Imports are timed in fresh processes with no bytecode cache writes (Lambda's /opt is read-only),
once as pip leaves the layer (no .pyc, as sam build ships it) and once with the layer compiled.
The handlers are the template's Python functions, read from template.yaml.
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from ocr_devkit.run import ROOT, TEMPLATE
from ocr_devkit.stack.cfn import load_template

LAYER_DIR = ROOT / "layers" / "ocr_pipeline"
IMPORT_REPEATS = 5
GOAL_IMPORT_MS = 300.0
GOAL_LAYER_MB = 60.0
# Lambda's python3.12 runs on Amazon Linux 2023 (glibc 2.34), so manylinux_2_28 wheels (Pillow's) apply too.
LAMBDA_PLATFORM = [
    *("--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"),
    *("--implementation", "cp", "--python-version", "3.12"),
]
_IMPORT_PROBE = (
    "import sys, time\nstarted = time.perf_counter()\nimport {module}\nprint((time.perf_counter() - started) * 1000)\n"
)


def handlers() -> dict[str, tuple[Path, str]]:
    """Logical id -> (code folder, handler module) for every Python function in the template."""
    template = load_template(TEMPLATE)
    runtime_default = str(template.globals.get("Function", {}).get("Runtime", ""))
    found: dict[str, tuple[Path, str]] = {}
    for logical_id, resource in template.resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.get("Properties") or {}
        code, handler = properties.get("CodeUri"), properties.get("Handler")
        runtime = str(properties.get("Runtime", runtime_default))
        if isinstance(code, str) and isinstance(handler, str) and runtime.startswith("python"):
            found[logical_id] = (template.directory / code, handler.rsplit(".", 1)[0])
    return found


def build_layer(target: Path, *, lambda_platform: bool) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    command += ["--target", str(target), "-r", str(LAYER_DIR / "requirements.txt")]
    if lambda_platform:
        command += [*LAMBDA_PLATFORM, "--only-binary=:all:"]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    shutil.copytree(LAYER_DIR / "ocr_pipeline", target / "ocr_pipeline", ignore=shutil.ignore_patterns("__pycache__"))


def tree_bytes(folder: Path) -> int:
    return sum(path.lstat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def largest_parts(folder: Path, count: int = 5) -> list[dict[str, Any]]:
    """The biggest top-level entries of the layer (packages and their .libs folders), in MB."""
    sizes = [
        (entry.name, tree_bytes(entry) if entry.is_dir() else entry.lstat().st_size)
        for entry in folder.iterdir()
        if not entry.name.endswith(".dist-info")
    ]
    sizes.sort(key=lambda item: item[1], reverse=True)
    return [{"name": name, "mb": round(size / 1e6, 1)} for name, size in sizes[:count]]


def import_ms(code_dir: Path, module: str, layer: Path, environment: dict[str, str]) -> float:
    runtime = sysconfig.get_paths()["purelib"]  # boto3 and botocore, which Lambda's runtime provides
    path = os.pathsep.join((str(code_dir), str(layer), runtime))
    result = subprocess.run(
        [sys.executable, "-S", "-B", "-c", _IMPORT_PROBE.format(module=module)],
        env={**environment, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing {module} from {code_dir} failed: {result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def slowest_imports(code_dir: Path, module: str, layer: Path, environment: dict[str, str]) -> list[dict[str, Any]]:
    """The packages whose own modules take longest to import (python -X importtime, self time summed)."""
    runtime = sysconfig.get_paths()["purelib"]
    path = os.pathsep.join((str(code_dir), str(layer), runtime))
    result = subprocess.run(
        [sys.executable, "-S", "-B", "-X", "importtime", "-c", f"import {module}"],
        env={**environment, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    totals: dict[str, int] = {}
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| +(\S+)", line)
        if match:
            package = match.group(2).split(".")[0]
            totals[package] = totals.get(package, 0) + int(match.group(1))
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:5]
    return [{"package": name, "ms": round(us / 1000, 1)} for name, us in ranked]


def lambda_environment(function: str) -> dict[str, str]:
    """What Lambda sets, plus the template's literal global variables (Powertools' service name...)."""
    template = load_template(TEMPLATE)
    variables = template.globals.get("Function", {}).get("Environment", {}).get("Variables", {})
    environment = {name: value for name, value in variables.items() if isinstance(value, str)}
    environment.update(
        {
            "PATH": os.environ.get("PATH", ""),
            "LANG": "C.UTF-8",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "AWS_LAMBDA_FUNCTION_NAME": function,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        }
    )
    return environment


def measure(log: Any = print) -> dict[str, Any]:
    result: dict[str, Any] = {"goal_import_ms": GOAL_IMPORT_MS, "goal_layer_mb": GOAL_LAYER_MB}
    with tempfile.TemporaryDirectory(prefix="ocr-bench-layer-") as scratch:
        lambda_layer, local_layer = Path(scratch) / "lambda", Path(scratch) / "local"
        try:
            log("  building the layer for Lambda (python3.12, manylinux x86_64)")
            build_layer(lambda_layer, lambda_platform=True)
            size = tree_bytes(lambda_layer)
            result["layer"] = {
                "built_for": "CPython 3.12, manylinux x86_64",
                "unzipped_mb": round(size / 1e6, 1),
                "largest": largest_parts(lambda_layer),
                "met": size / 1e6 < GOAL_LAYER_MB,
            }
        except (subprocess.SubprocessError, OSError) as exc:
            result["layer"] = {"error": f"the layer could not be built for Lambda: {_why(exc)}"}
        try:
            log("  building the layer for this machine's Python, to import from")
            build_layer(local_layer, lambda_platform=False)
        except (subprocess.SubprocessError, OSError) as exc:
            result["imports"] = {"error": f"the layer could not be built: {_why(exc)}"}
            return result
        result["local_layer_mb"] = round(tree_bytes(local_layer) / 1e6, 1)
        imports: dict[str, Any] = {}
        for function, (code_dir, module) in handlers().items():
            environment = lambda_environment(function)
            log(f"  importing {function} ({code_dir.relative_to(ROOT)}/{module}.py), {IMPORT_REPEATS} times each way")
            as_built = [import_ms(code_dir, module, local_layer, environment) for _ in range(IMPORT_REPEATS)]
            imports[function] = {"as_built_ms": round(statistics.median(as_built), 1)}
        compileall.compile_dir(local_layer, quiet=2, workers=1)
        for function, (code_dir, module) in handlers().items():
            environment = lambda_environment(function)
            compiled = [import_ms(code_dir, module, local_layer, environment) for _ in range(IMPORT_REPEATS)]
            entry = imports[function]
            entry["compiled_ms"] = round(statistics.median(compiled), 1)
            entry["met"] = entry["as_built_ms"] < GOAL_IMPORT_MS
            entry["slowest"] = slowest_imports(code_dir, module, local_layer, environment)
        result["imports"] = imports
    return result


def _why(exc: BaseException) -> str:
    stderr = getattr(exc, "stderr", None)
    return (stderr or str(exc)).strip().splitlines()[-1] if (stderr or str(exc)).strip() else type(exc).__name__
