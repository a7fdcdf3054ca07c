"""Parse ``/proc/PID/numa_maps``: resident bytes per node, by kind, and the memory policy.

Reading this file makes the kernel walk the process's page tables (~40 ns per resident page),
so callers read it on their own, slower cadence.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from numatop_llm.probes.cpulist import parse_cpulist
from numatop_llm.probes.models import NumaMaps, Policy, PolicyMode
from numatop_llm.probes.textio import Problems, describe_oserror

_HEX = b"0123456789abcdefABCDEF"
#: one page count per node: `` N1=51200`` (a whole token)
_COUNTS = re.compile(rb" N(\d+)=(\d+)(?= |$)")
_SHM_PREFIXES = (b"/dev/shm/", b"/SYSV", b"/memfd:", b"/dev/zero")
#: bytes asked for per read(): the kernel formats numa_maps into a one-page buffer and, when the
#: caller asks for at least a page, walks the mapping that overflows it twice (shown, dropped,
#: shown again on the next read). Asking for a page minus 1 KiB stops the kernel before it
#: overflows (for lines under 1 KiB): a multi-GiB mapping at a page boundary is walked once.
READ_CHUNK = max(1024, (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) - 1024)


def parse_policy(word: str) -> Policy:
    """Turn a numa_maps policy word (``bind:0``, ``interleave=static:0-3``, ``default``) into a Policy."""
    text = word.strip() or "default"
    head, _, nodes_text = text.partition(":")
    mode = head.split("=", 1)[0]
    mode = {"prefer (many)": "preferred-many", "weighted interleave": "weighted-interleave"}.get(mode, mode)
    nodes: tuple[int, ...] = ()
    if nodes_text:
        try:
            nodes = tuple(parse_cpulist(nodes_text))
        except ValueError:
            nodes = ()
    return Policy(mode=PolicyMode(mode), nodes=nodes, text=text)


def parse_numa_maps(text: str | bytes, default_page_kib: int = 4) -> NumaMaps:
    """Parse numa_maps (bytes as read, or text). Unknown or truncated lines are skipped, never fatal.

    Works on bytes and never splits a line into all its tokens: a line without an ``N<id>=``
    count holds no resident page and is dropped by one regex search; for the others the policy,
    ``file=``, ``huge`` and ``kernelpagesize_kB=`` are found by substring search (the kernel
    escapes spaces and ``=`` in file names, so these cannot occur inside a path).
    """
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    node_bytes: dict[int, int] = {}
    kinds: dict[bytes, dict[int, int]] = {b"anon": {}, b"file": {}, b"shm": {}, b"huge": {}}
    policy_bytes: dict[bytes, int] = {}
    counts_of = _COUNTS.findall
    for line in data.split(b"\n"):
        counts = counts_of(line)
        if not counts:
            continue  # no page on any node (or not a numa_maps line)
        head = line.split(None, 2)
        if len(head) < 3 or head[0].strip(_HEX):
            continue
        # policy words can contain a space: "prefer (many):0-1", "weighted interleave:0,2"
        policy_word, rest = head[1], head[2]
        if (policy_word == b"prefer" and rest.startswith(b"(many)")) or (
            policy_word == b"weighted" and rest.startswith(b"interleave")
        ):
            word, _, rest = rest.partition(b" ")
            policy_word += b" " + word
        rest = b" " + rest
        page_kib = default_page_kib
        k = rest.rfind(b" kernelpagesize_kB=")
        if k >= 0:
            val = rest[k + 19 :].split(None, 1)
            if val and val[0].isdigit():
                page_kib = int(val[0])
        if b" huge " in rest or rest.endswith(b" huge"):
            kind = b"huge"
        elif (f := rest.find(b" file=")) >= 0:
            kind = b"shm" if rest.startswith(_SHM_PREFIXES, f + 6) else b"file"
        else:
            kind = b"anon"
        size = page_kib * 1024
        total = 0
        per_kind = kinds[kind]
        for nid_text, pages in counts:
            nid = int(nid_text)
            nbytes = int(pages) * size
            total += nbytes
            node_bytes[nid] = node_bytes.get(nid, 0) + nbytes
            per_kind[nid] = per_kind.get(nid, 0) + nbytes
        policy_bytes[policy_word] = policy_bytes.get(policy_word, 0) + total
    words = {w.decode("utf-8", "replace"): n for w, n in policy_bytes.items()}
    return NumaMaps(
        node_bytes=dict(sorted(node_bytes.items())),
        anon_bytes=dict(sorted(kinds[b"anon"].items())),
        file_bytes=dict(sorted(kinds[b"file"].items())),
        shm_bytes=dict(sorted(kinds[b"shm"].items())),
        huge_bytes=dict(sorted(kinds[b"huge"].items())),
        policy_bytes=words,
        policy=dominant_policy(words),
    )


def dominant_policy(policy_bytes: dict[str, int]) -> Policy:
    """The policy that holds most bytes, preferring any explicit policy over ``default``.

    A process that calls ``numa_set_membind`` after start-up keeps its early mappings under
    ``default``; the explicit policy is the one that governs new allocations (weights, KV cache).
    """
    explicit = {w: b for w, b in policy_bytes.items() if not w.startswith("default")}
    pool = explicit or policy_bytes
    if not pool:
        return Policy()
    word = max(pool.items(), key=lambda kv: (kv[1], kv[0]))[0]
    return parse_policy(word)


def read_numa_maps_bytes(path: str | Path) -> bytes:
    """The bytes of a numa_maps file, read ``READ_CHUNK`` at a time (raises OSError)."""
    chunks: list[bytes] = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while chunk := os.read(fd, READ_CHUNK):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_numa_maps(proc: Path, pid: int, problems: Problems) -> NumaMaps | None:
    """Read and parse ``PROC/PID/numa_maps``; None (with a reason) when it cannot be read."""
    path = proc / str(pid) / "numa_maps"
    t0 = time.perf_counter()
    try:
        data = read_numa_maps_bytes(path)
    except OSError as exc:
        problems.add(describe_oserror(path, exc))
        return None
    parsed = parse_numa_maps(data)
    return parsed.model_copy(update={"read_seconds": time.perf_counter() - t0})
