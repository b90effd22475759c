"""Keep TensorFlow's C++ start-up lines out of a stage's output, and nothing else.

TensorFlow's native code logs through absl before its log level is read, so
`TF_CPP_MIN_LOG_LEVEL` cannot silence the start-up banner (oneDNN, CUDA stubs)
nor, on a machine with no GPU, `E0000 ... failed call to cuInit`: an error line
in a healthy run. The filter sits on file descriptor 2 itself, where native
code writes, and drops only the lines matched below; every other line, Python
warnings and tracebacks included, passes through unchanged.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

# Lines that say nothing is wrong. INFO lines (I + date) are noise by definition.
_NOISE = [
    rb"^WARNING: All log messages before absl::InitializeLog\(\) is called",
    rb"^I\d{4} ",
    # A tf.data graph attribute newer than its op registry: TF's own, harmless (tensorflow#79229).
    rb"^E\d{4} .*node_def_util\.cc.*use_unbounded_threadpool",
    # Gloo's report of a complete cluster (multi-host training on CPU). Gloo writes it to
    # standard output, which gradguard.training.multihost points at standard error meanwhile.
    rb"^\[Gloo\] Rank \d+ is connected to (\d+) peer ranks\. Expected number of connected "
    rb"peer ranks is : \1$",
]
# Said on every machine without an NVIDIA driver, where no GPU can be used anyway.
_NO_GPU_NOISE = [rb"^E\d{4} .*failed call to cuInit"]


def noise_patterns(has_nvidia_device: bool) -> list[re.Pattern]:
    """The lines to drop; the cuInit failure only where no NVIDIA device exists."""
    found = _NOISE + ([] if has_nvidia_device else _NO_GPU_NOISE)
    return [re.compile(pattern) for pattern in found]


def filter_lines(lines, patterns: list[re.Pattern]):
    """Yield the lines (bytes) that match none of `patterns`."""
    for line in lines:
        if not any(pattern.search(line) for pattern in patterns):
            yield line


def _patterns() -> list[re.Pattern]:
    return noise_patterns(any(Path("/dev").glob("nvidia[0-9]*")))


@contextlib.contextmanager
def filtered():
    """File descriptor 2 through the filter for the `with` block only (e.g. a test session's
    TensorFlow device set-up): its lines are held in a file and written out at the end."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in filter_lines(held, _patterns()):
                os.write(2, line)


def install() -> None:
    """Route this process's file descriptor 2 through the filter until it exits."""
    patterns = _patterns()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as source:
            for line in filter_lines(source, patterns):
                os.write(original, line)

    thread = threading.Thread(target=pump, name="native-log-filter", daemon=True)
    thread.start()

    def restore() -> None:  # after a traceback is printed: closing fd 2 ends the pump
        sys.stderr.flush()
        os.dup2(original, 2)
        thread.join(timeout=5)

    atexit.register(restore)
    _installed.append(restore)


_installed: list = []


def uninstall() -> None:
    """Give file descriptor 2 back as it was (e.g. before `os.exec*`, which ends the filter)."""
    while _installed:
        restore = _installed.pop()
        atexit.unregister(restore)
        restore()
