"""The local Lambda worker's "Max Memory Used" is its own peak, not the one it inherits from the runner."""

from __future__ import annotations

import multiprocessing
import os
import re
import resource
from pathlib import Path

import pytest
from ocr_devkit.stack.pool import WorkerProcess
from ocr_devkit.stack.worker import WorkerConfig, vm_hwm_kb

STATUS = """Name:\tpython3.12
Umask:\t0022
State:\tS (sleeping)
Pid:\t4242
VmPeak:\t  912344 kB
VmSize:\t  850112 kB
VmHWM:\t   78412 kB
VmRSS:\t   61020 kB
Threads:\t3
"""


def test_the_peak_is_read_from_the_vm_hwm_line():
    # Given a /proc/<pid>/status text, When its peak is read, Then it is VmHWM, not VmPeak (virtual) or VmRSS (now)
    assert vm_hwm_kb(STATUS) == 78412


@pytest.mark.parametrize(
    "status",
    ["", "Name:\tpython3.12\nVmRSS:\t 61020 kB\n", "VmHWM:\n", "VmHWM:\t 12 MB\n", "VmHWMX:\t 12 kB\n"],
)
def test_a_status_without_a_readable_vm_hwm_gives_none(status):
    # Given a status text without a VmHWM line in kB (another kernel, another OS), Then there is no figure
    assert vm_hwm_kb(status) is None


HANDLER = "def handler(event, context):\n    return {'ok': True}\n"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux-only")
def test_a_spawned_worker_reports_its_own_peak_not_the_runner_s(tmp_path):
    # Given a runner that has touched a big buffer, so its ru_maxrss (which exec hands down) is large
    ballast = b"\x01" * (300 * 1024 * 1024)
    parent_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "tiny.py").write_text(HANDLER)
    config = WorkerConfig(
        function_name="tiny",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:tiny",
        handler_module="tiny",
        handler_attribute="handler",
        sys_path=(str(tmp_path / "code"),),
        environment={"PATH": os.environ.get("PATH", "")},
        log_path=str(tmp_path / "tiny.log"),
        memory_mb=512,
        timeout_s=30,
        parent_pid=os.getpid(),
    )
    # When a worker is spawned and invoked once
    worker = WorkerProcess(multiprocessing.get_context("spawn"), config)
    try:
        _, init_error = worker.wait_ready(60)
        assert init_error is None
        assert worker.call("r-1", "{}", 30).ok
    finally:
        worker.stop()
    del ballast
    # Then its REPORT line gives a figure far below the runner's peak: the worker's own
    (reported,) = re.findall(r"Max Memory Used: (\d+) MB", (tmp_path / "tiny.log").read_text())
    assert parent_peak_mb > 300
    assert 0 < int(reported) < 150
