"""A process that has streamed blocks hands large arrays' memory back when they are freed (glibc only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from wnet_zoo.prediction.stream import worker

# A freed 24 MiB array raises glibc's own threshold, so a 16 MiB one made on a thread next comes from that thread's
# arena, and freed below a small array still held it stays resident. Prints the resident MiB it leaves behind, by
# default, after map_large_allocations, or after a streamed prediction (argv: mode, model, image, out).
SCRIPT = """
import os, sys, threading
import numpy as np
from wnet_zoo.prediction.stream import worker
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
del_me = np.ones(3 << 20)
del del_me
if sys.argv[1] == "mapped":
    worker.map_large_allocations()
if sys.argv[1] == "streamed":
    from wnet_zoo.prediction.files import predict_files
    predict_files(sys.argv[2], [sys.argv[3]], sys.argv[4], device="cpu", tile=16, outputs=("instances",),
                  fmt="zarr", stream=True, report=lambda line: None)
kept = []
def work():
    before = resident()
    large = np.ones(2 << 20)
    kept.append(np.ones(1000))
    del large
    kept.append(resident() - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(kept[-1])
"""


def left_resident(*arguments: str) -> float:
    """The subprocess's answer, with glibc's allocator as it comes (no tunables, no other allocator preloaded)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MALLOC_") and key not in ("GLIBC_TUNABLES", "LD_PRELOAD")
    }
    done = subprocess.run([sys.executable, "-c", SCRIPT, *arguments], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(worker._LIBC is None, reason="glibc's allocator")
def test_large_arrays_go_back_to_the_system_once_a_process_has_streamed(tiny_onnx, example, tmp_path: Path):
    assert left_resident("default") > 12  # glibc's own: the thread's arena keeps the 16 MiB
    assert left_resident("mapped") < 4
    image = tmp_path / "crop.tif"
    tifffile.imwrite(image, example[:32, :32, :32].astype(np.float32))
    assert left_resident("streamed", str(tiny_onnx), str(image), str(tmp_path / "out")) < 4
