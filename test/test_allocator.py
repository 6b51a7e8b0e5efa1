"""retain_freed_memory: freed activations are reused instead of being faulted in again every frame."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mex_fusion_ros.deploy.allocator import retain_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

# A frame-like pattern: eight 8 MiB buffers alive together, all freed, again and again.
_FRAMES = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from mex_fusion_ros.deploy.allocator import retain_freed_memory
    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    def frame():
        buffers = [np.ones(2 * 1024 * 1024, dtype=np.float32) for _ in range(8)]
        return sum(float(b[-1]) for b in buffers)
    frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        frame()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
""")


def _faults_per_frame(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", _FRAMES, mode], capture_output=True, text=True, timeout=60,
                            check=True)
    return int(result.stdout.strip())


def test_retained_memory_is_not_faulted_in_again() -> None:
    default, retained = _faults_per_frame("default"), _faults_per_frame("retain")
    # 64 MiB per frame: the default allocator maps (part of) it afresh every frame (about 4000
    # faults measured on Debian 12; numpy's huge-page advice makes it fewer than 16384).
    assert default > 2000, f"default allocator: {default} faults per frame (expected fresh pages)"
    assert retained < 500, f"with retain_freed_memory: {retained} faults per frame"


def test_retain_freed_memory_is_idempotent() -> None:
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True
