"""gradguard.native_log: TensorFlow's start-up lines dropped, every other line kept."""

from __future__ import annotations

import subprocess
import sys

from gradguard.native_log import filter_lines, noise_patterns

NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796362969.504333   13197 cudart_stub.cc:31] Could not find cuda drivers\n",
    b"E0000 00:00:17963 12 node_def_util.cc:680] Unknown attribute use_unbounded_threadpool\n",
    b"[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of connected peer ranks is : 1\n",
]
CUINIT = b"E0000 00:00:1796 2 cuda_executor.cc:1228] failed call to cuInit: UNKNOWN ERROR (303)\n"
KEPT = [
    b"E0000 00:00:1796 2 some_op.cc:12] a real error\n",
    b"Traceback (most recent call last):\n",
    b"/x/y.py:3: UserWarning: I0000 inside a warning is not an INFO line\n",
    b"[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of connected peer ranks is : 2\n",
    b"train: epoch 1/5\n",
]


def test_noise_goes_and_everything_else_stays_in_order():
    lines = [NOISE[0], KEPT[0], NOISE[1], KEPT[1], NOISE[2], KEPT[2], NOISE[3], KEPT[3], KEPT[4]]
    assert list(filter_lines(lines, noise_patterns(has_nvidia_device=True))) == KEPT


def test_the_cuinit_failure_is_noise_only_where_no_nvidia_device_exists():
    assert list(filter_lines([CUINIT], noise_patterns(has_nvidia_device=False))) == []
    assert list(filter_lines([CUINIT], noise_patterns(has_nvidia_device=True))) == [CUINIT]


def test_filtered_holds_file_descriptor_2_and_writes_back_what_is_not_noise():
    script = (
        "import os; from gradguard import native_log\n"
        "with native_log.filtered():\n"
        f"    os.write(2, {NOISE[1] + KEPT[0] + NOISE[0]!r})\n"
        "os.write(2, b'after\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert (done.returncode, done.stderr) == (0, KEPT[0] + b"after\n")
