"""A stand-in for a model rank inside the test guests: allocate and touch memory, run threads, wait.

Stdlib only; run it as ``numactl --membind=N --cpunodebind=N python3 -I tests/vm/hog.py ...``.
It allocates ``--bytes`` in chunks, touching every page (so the memory policy places each page
now), appends its progress to ``--progress`` after each chunk, starts ``--threads`` idle threads,
writes ``--ready`` ("PID BYTES") and then holds the memory for ``--hold`` seconds or until
SIGTERM. With ``--grow N``, each SIGUSR1 allocates and touches N bytes more. Under a strict
membind that does not fit, the kernel SIGKILLs it part way (exit 137).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--chunk", type=int, default=16 << 20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ready")
    ap.add_argument("--progress")
    ap.add_argument("--hold", type=float, default=0.0)
    ap.add_argument("--grow", type=int, default=0)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    held: list[bytearray] = []
    prog = open(args.progress, "a", buffering=1) if args.progress else None  # noqa: SIM115
    done = 0

    def allocate(total: int) -> None:
        nonlocal done
        goal = done + total
        while done < goal:
            n = min(args.chunk, goal - done)
            buf = bytearray(n)  # calloc: untouched zero pages until written
            buf[::PAGE] = b"\1" * len(range(0, n, PAGE))
            held.append(buf)
            done += n
            if prog:
                prog.write(f"{done}\n")

    allocate(args.bytes)
    if args.grow:
        signal.signal(signal.SIGUSR1, lambda *_: allocate(args.grow))
    stop = threading.Event()
    for _ in range(args.threads):
        threading.Thread(target=stop.wait, daemon=True).start()
    if args.ready:
        tmp = args.ready + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{os.getpid()} {done}\n")
        os.replace(tmp, args.ready)
    deadline = time.monotonic() + args.hold
    while time.monotonic() < deadline:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
