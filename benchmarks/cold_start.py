"""Cold start: the built layer's unzipped size, and the import time of each handler on top of it.

The layer is built the way `sam build` builds it, by layers/ocr_pipeline/Makefile (the layer's
BuildMethod is makefile): its requirements and the `ocr_pipeline` package, compiled to .pyc. Two builds:

* for Lambda (CPython 3.12, manylinux wheels for the template's architecture: aarch64 for arm64),
  whose size is the figure, with the machine its native libraries were built for read from their
  ELF headers; its bytecode is compiled by this machine's Python, a stand-in of about the same size
  for 3.12's, and
* for this machine's Python, which a fresh interpreter imports each handler from, with the
  function's folder first, the layer next and the runtime's boto3 last, as Lambda orders them.
  The runtime folder holds boto3 and what it needs, as Lambda's does, and nothing else.

Imports are timed in fresh processes with no bytecode cache writes (Lambda's /opt is read-only):
once as built, and once with the layer's .pyc removed, which is what a layer built without them
(BuildMethod python3.12) costs. The handlers are the template's Python functions, from template.yaml.

Each handler is compared with its library floor, measured in the same run, alternating with it: a
fresh interpreter importing only what no code of ours can avoid: boto3, pydantic's BaseModel
(`pydantic.main`), and exactly the modules of pydantic and Powertools that the handler's own code
imports (read from its `-X importtime` tree: the library modules that the handler or the layer import
directly, or that pydantic imports on its first use while a module of ours defines its models; what
those modules import comes along). `import pydantic` alone loads almost nothing until a model is defined. What the handler imports beyond
its floor is listed by package, so a handler over the goal shows what is left. The ratio is taken on
the import's CPU time (user + system), which other processes on a busy machine do not lengthen as they
do wall time (on Lambda, with its CPU share to itself, an import's wall time is about its CPU time);
wall times and their ratio are reported beside it.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from ocr_devkit.run import ROOT, TEMPLATE
from ocr_devkit.stack.cfn import load_template

LAYER_DIR = ROOT / "layers" / "ocr_pipeline"
# e_machine of an ELF header (the ELF spec's EM_ values) -> the name wheel tags use for that machine.
ELF_MACHINES = {183: "aarch64", 62: "x86_64"}
IMPORT_REPEATS = 7
# A handler's import, with the built layer, against the import of the libraries it cannot avoid.
GOAL_FLOOR_RATIO = 1.3
GOAL_LAYER_MB = 60.0
# The libraries every handler starts with; the modules of pydantic and Powertools it uses are its own (floor_modules).
FLOOR_LIBRARIES = ("boto3", "pydantic.main")
FLOOR_PACKAGES = ("aws_lambda_powertools", "pydantic", "pydantic_core")
# Modules whose imports count as the handler's own: the handler module and the layer's package.
OUR_PACKAGES = ("ocr_pipeline",)
LOCAL_PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# Wall time and the process's CPU time (user + system) of the import, in ms, and the full (generation 2)
# garbage collections that ran during it: one scans every object imported so far.
_IMPORT_PROBE = (
    "import gc, time\nstarted, cpu = time.perf_counter(), time.process_time()\nimport {module}\n"
    "print((time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000, "
    "gc.get_stats()[2]['collections'])\n"
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


def build_layer(artifacts: Path, *, lambda_platform: bool) -> Path:
    """Run the layer's Makefile as sam build does; returns the folder Lambda puts on sys.path (python/)."""
    command = ["make", "--no-print-directory", "-C", str(LAYER_DIR), "build-SharedLayer"]
    command += [f"ARTIFACTS_DIR={artifacts}", f"PYTHON={sys.executable}", "ALLOW_OTHER_PYTHON=1"]
    if not lambda_platform:
        command += [f"LAMBDA_PYTHON_VERSION={LOCAL_PYTHON_VERSION}", "PIP_TARGET_FLAGS="]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    return artifacts / "python"


def layer_machine() -> str:
    """The machine the layer's Makefile fetches wheels for (its LAMBDA_MACHINE), as a build sees it."""
    command = ["make", "--no-print-directory", "-s", "-f", str(LAYER_DIR / "Makefile")]
    command += ["--eval", "print-machine: ; @echo $(LAMBDA_MACHINE)", "print-machine"]
    environment = {k: v for k, v in os.environ.items() if k not in {"LAMBDA_MACHINE", "MAKEFLAGS", "MFLAGS"}}
    return subprocess.run(command, env=environment, check=True, capture_output=True, text=True).stdout.strip()


def build_runtime(target: Path) -> Path:
    """boto3 at the project's pin and its dependencies: what Lambda's runtime puts after the layer."""
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    boto3 = next(pin for pin in pins if pin.startswith("boto3"))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*command, "--target", str(target), boto3], check=True, capture_output=True, text=True, timeout=900)
    return target


def native_machines(folder: Path) -> dict[str, int]:
    """How many of the layer's ELF files (extensions and bundled libraries) are built for each machine."""
    counts: dict[str, int] = {}
    for path in folder.rglob("*.so*"):
        if not path.is_file() or path.is_symlink():
            continue
        header = path.read_bytes()[:20]
        if len(header) == 20 and header[:4] == b"\x7fELF":
            machine = int.from_bytes(header[18:20], "big" if header[5] == 2 else "little")
            name = ELF_MACHINES.get(machine, f"e_machine {machine}")
            counts[name] = counts.get(name, 0) + 1
    return counts


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


def import_ms(code_dir: Path, module: str, layer: Path, runtime: Path, environment: dict[str, str]) -> float:
    return import_times(code_dir, module, layer, runtime, environment)[0]


def import_times(
    code_dir: Path, module: str, layer: Path, runtime: Path, environment: dict[str, str]
) -> tuple[float, float]:
    """(wall, CPU) ms of importing `module` in a fresh interpreter, as Lambda orders the paths."""
    wall, cpu, _ = _import_probe(code_dir, module, layer, runtime, environment)
    return wall, cpu


def full_collections(code_dir: Path, module: str, layer: Path, runtime: Path, environment: dict[str, str]) -> int:
    """How many full garbage collections importing `module` runs (the same in every run: allocations decide)."""
    return int(_import_probe(code_dir, module, layer, runtime, environment)[2])


def _import_probe(
    code_dir: Path, module: str, layer: Path, runtime: Path, environment: dict[str, str]
) -> tuple[float, float, float]:
    """Wall ms, CPU ms and full collections of importing `module` in a fresh interpreter."""
    path = os.pathsep.join((str(code_dir), str(layer), str(runtime)))
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
    wall, cpu, collections = result.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu), float(collections)


def import_tree(
    code_dir: Path, module: str, layer: Path, runtime: Path, environment: dict[str, str]
) -> list[tuple[str, int, str | None]]:
    """`python -X importtime` of `import module`: (module, self time in µs, the module that imported it)."""
    path = os.pathsep.join((str(code_dir), str(layer), str(runtime)))
    result = subprocess.run(
        [sys.executable, "-S", "-B", "-X", "importtime", "-c", f"import {module}"],
        env={**environment, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing {module} from {code_dir} failed: {result.stderr[-2000:]}")
    rows = []
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|( *)(\S+)", line)
        if match:
            rows.append((match.group(3), int(match.group(1)), len(match.group(2)) // 2))
    # A module is listed after everything it imported, one level deeper: its importer is the next
    # module listed at a shallower level; the top level's importer is the probe itself (None).
    tree: list[tuple[str, int, str | None]] = []
    for index, (name, self_us, depth) in enumerate(rows):
        importer = next((other for other, _, level in rows[index + 1 :] if level < depth), None)
        tree.append((name, self_us, importer))
    return tree


def _is_ours(module: str | None, handler_module: str) -> bool:
    return module is not None and (module == handler_module or module.split(".")[0] in OUR_PACKAGES)


def floor_modules(tree: list[tuple[str, int, str | None]], handler_module: str) -> list[str]:
    """The modules of pydantic and Powertools the handler or the layer import themselves (their imports come along)."""
    used = {
        name
        for name, _, importer in tree
        if name.split(".")[0] in FLOOR_PACKAGES and (importer is None or _is_ours(importer, handler_module))
    }
    return sorted(used - set(FLOOR_LIBRARIES))


def beyond_floor(
    tree: list[tuple[str, int, str | None]], floor_tree: list[tuple[str, int, str | None]], count: int = 6
) -> list[dict[str, Any]]:
    """What the handler imports that its floor does not, by package (the layer's by subpackage), slowest first."""
    in_floor = {name for name, _, _ in floor_tree}
    totals: dict[str, int] = {}
    for name, self_us, _ in tree:
        if name in in_floor:
            continue
        parts = name.split(".")
        package = ".".join(parts[:2]) if parts[0] in OUR_PACKAGES and len(parts) > 1 else parts[0]
        totals[package] = totals.get(package, 0) + self_us
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:count]
    return [{"package": name, "ms": round(us / 1000, 1)} for name, us in ranked]


def function_variables() -> dict[str, str]:
    """The template's literal global function variables (Powertools' service name, malloc's thresholds...)."""
    template = load_template(TEMPLATE)
    variables = template.globals.get("Function", {}).get("Environment", {}).get("Variables", {})
    return {name: value for name, value in variables.items() if isinstance(value, str)}


def lambda_environment(function: str) -> dict[str, str]:
    """What Lambda sets, plus the template's literal global variables."""
    environment = function_variables()
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
    result: dict[str, Any] = {"goal_floor_ratio": GOAL_FLOOR_RATIO, "goal_layer_mb": GOAL_LAYER_MB}
    with tempfile.TemporaryDirectory(prefix="ocr-bench-layer-") as scratch:
        try:
            machine = layer_machine()
            log(f"  building the layer for Lambda (python3.12, manylinux {machine}) with its Makefile")
            lambda_layer = build_layer(Path(scratch) / "lambda", lambda_platform=True)
            size = tree_bytes(lambda_layer)
            machines = native_machines(lambda_layer)
            for_lambda = bool(machines) and set(machines) == {machine}
            result["layer"] = {
                "built_for": f"CPython 3.12, manylinux {machine}, with .pyc",
                "native_libraries": machines,
                "native_all_for_lambda": for_lambda,
                "unzipped_mb": round(size / 1e6, 1),
                "bytecode_mb": round(sum(p.stat().st_size for p in lambda_layer.rglob("*.pyc")) / 1e6, 1),
                "largest": largest_parts(lambda_layer),
                "met": size / 1e6 < GOAL_LAYER_MB and for_lambda,
            }
        except (subprocess.SubprocessError, OSError) as exc:
            result["layer"] = {"error": f"the layer could not be built for Lambda: {_why(exc)}"}
        try:
            log("  building the layer for this machine's Python, to import from, and boto3 as the runtime has it")
            local_layer = build_layer(Path(scratch) / "local", lambda_platform=False)
            runtime = build_runtime(Path(scratch) / "runtime")
        except (subprocess.SubprocessError, OSError) as exc:
            result["imports"] = {"error": f"the layer could not be built: {_why(exc)}"}
            return result
        result["local_layer_mb"] = round(tree_bytes(local_layer) / 1e6, 1)
        functions = handlers()
        environments = {function: lambda_environment(function) for function in functions}
        floors: dict[str, str] = {}
        trees: dict[str, list[tuple[str, int, str | None]]] = {}
        for function, (code_dir, module) in functions.items():
            trees[function] = import_tree(code_dir, module, local_layer, runtime, environments[function])
            floors[function] = ", ".join((*FLOOR_LIBRARIES, *floor_modules(trees[function], module)))
        imports: dict[str, Any] = {}
        for function, (code_dir, module) in functions.items():
            environment = environments[function]
            log(
                f"  importing {function} ({code_dir.relative_to(ROOT)}/{module}.py) and its library floor, "
                f"{IMPORT_REPEATS} times each, alternating"
            )
            built: list[tuple[float, float]] = []
            floor: list[tuple[float, float]] = []
            # Alternating, so that a change in the machine's load weighs on both alike.
            for _ in range(IMPORT_REPEATS):
                built.append(import_times(code_dir, module, local_layer, runtime, environment))
                floor.append(import_times(code_dir, floors[function], local_layer, runtime, environment))
            handler_ms, floor_ms = (statistics.median(wall for wall, _ in runs) for runs in (built, floor))
            handler_cpu, floor_cpu = (statistics.median(cpu for _, cpu in runs) for runs in (built, floor))
            floor_tree = import_tree(code_dir, floors[function], local_layer, runtime, environment)
            imports[function] = {
                "as_built_ms": round(handler_ms, 1),
                "floor_ms": round(floor_ms, 1),
                "as_built_cpu_ms": round(handler_cpu, 1),
                "floor_cpu_ms": round(floor_cpu, 1),
                "floor_modules": floors[function],
                # On CPU time: a busy machine's other processes lengthen wall time, not the import's own work.
                "floor_ratio": round(handler_cpu / floor_cpu, 2),
                "floor_ratio_wall": round(handler_ms / floor_ms, 2),
                "met": handler_cpu <= GOAL_FLOOR_RATIO * floor_cpu,
                "beyond_floor": beyond_floor(trees[function], floor_tree),
                # A full collection's time is charged to whichever module was importing: beyond_floor may show it.
                "full_gc_passes": full_collections(code_dir, module, local_layer, runtime, environment),
                "floor_full_gc_passes": full_collections(code_dir, floors[function], local_layer, runtime, environment),
            }
        for bytecode in local_layer.rglob("*.pyc"):
            bytecode.unlink()
        for function, (code_dir, module) in functions.items():
            environment = environments[function]
            bare = [import_ms(code_dir, module, local_layer, runtime, environment) for _ in range(IMPORT_REPEATS)]
            imports[function]["without_pyc_ms"] = round(statistics.median(bare), 1)
        result["imports"] = imports
    return result


def _why(exc: BaseException) -> str:
    stderr = getattr(exc, "stderr", None)
    return (stderr or str(exc)).strip().splitlines()[-1] if (stderr or str(exc)).strip() else type(exc).__name__
