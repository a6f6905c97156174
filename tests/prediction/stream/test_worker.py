"""A process working on blocks hands large arrays' memory back when they are freed (glibc only)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wnet_zoo.prediction.stream import worker

# A freed 24 MiB array raises glibc's threshold, so a 16 MiB one made on a thread next comes from that thread's
# arena; freed below a small array still held, it stays resident. Prints the resident MiB it leaves behind.
SCRIPT = """
import sys, threading
import numpy as np
from wnet_zoo.prediction.stream import worker
if sys.argv[1] == "mapped":
    worker.map_large_allocations()
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20
del_me = np.ones(3 << 20)
del del_me
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


def left_resident(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


@pytest.mark.skipif(worker._LIBC is None, reason="glibc's allocator")
def test_large_arrays_go_back_to_the_system_once_a_process_works_on_blocks():
    assert left_resident("default") > 12  # glibc's own: the thread's arena keeps the 16 MiB
    assert left_resident("mapped") < 4
