"""Run in a test guest under ``numactl --interleave=...``: map, touch and report where the pages went.

Stdlib only. Maps ``--bytes`` of anonymous memory with transparent huge pages off for the
mapping (so the kernel interleaves 4 KiB pages, one by one), touches every page, and prints one
JSON line: the mapping's start address, its page count, the page size, and ``/proc/self/numa_maps``
(the test parses it with the project's own reader and predicts the split from the address).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os

PAGE = os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, required=True)
    args = ap.parse_args()
    size = args.bytes - args.bytes % PAGE
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in range(0, size, PAGE):
        m[off] = 1
    start = ctypes.addressof(ctypes.c_char.from_buffer(m))
    with open("/proc/self/numa_maps") as fh:
        numa_maps = fh.read()
    doc = {"start": start, "pages": size // PAGE, "page_size": PAGE, "numa_maps": numa_maps}
    doc["cpus"] = sorted(os.sched_getaffinity(0))
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
