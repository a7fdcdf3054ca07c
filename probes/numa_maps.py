"""Parse ``/proc/PID/numa_maps``: resident bytes per node, by kind, and the memory policy.

Reading this file makes the kernel walk the process's page tables (~40 ns per resident page),
so callers read it on their own, slower cadence.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from probes.cpulist import parse_cpulist
from probes.models import NumaMaps, Policy
from probes.textio import Problems, describe_oserror

# Policy words can contain a space ("prefer (many)", "weighted interleave").
_LINE = re.compile(r"^([0-9a-fA-F]+)\s+(prefer \(many\)\S*|weighted interleave\S*|\S+)(.*)$")
_SHM_PREFIXES = ("/dev/shm/", "/SYSV", "/memfd:", "/dev/zero")


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
    return Policy(mode=mode, nodes=nodes, text=text)


def parse_numa_maps(text: str, default_page_kib: int = 4) -> NumaMaps:
    """Parse numa_maps text. Unknown or truncated lines are skipped, never fatal."""
    node_bytes: dict[int, int] = {}
    kinds: dict[str, dict[int, int]] = {"anon": {}, "file": {}, "shm": {}, "huge": {}}
    policy_bytes: dict[str, int] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        policy_word = m.group(2)
        tokens = m.group(3).split()
        page_kib = default_page_kib
        per_node: dict[int, int] = {}
        kind = "anon"
        for tok in tokens:
            key, eq, val = tok.partition("=")
            if tok == "huge":
                kind = "huge"
            elif not eq:
                continue
            elif key == "kernelpagesize_kB":
                if val.isdigit():
                    page_kib = int(val)
            elif key == "file" and kind != "huge":
                kind = "shm" if val.startswith(_SHM_PREFIXES) else "file"
            elif len(key) > 1 and key[0] == "N" and key[1:].isdigit() and val.isdigit():
                per_node[int(key[1:])] = int(val)
        if not per_node:
            continue
        size = page_kib * 1024
        total = 0
        for nid, pages in per_node.items():
            b = pages * size
            total += b
            node_bytes[nid] = node_bytes.get(nid, 0) + b
            kinds[kind][nid] = kinds[kind].get(nid, 0) + b
        policy_bytes[policy_word] = policy_bytes.get(policy_word, 0) + total
    return NumaMaps(
        node_bytes=dict(sorted(node_bytes.items())),
        anon_bytes=dict(sorted(kinds["anon"].items())),
        file_bytes=dict(sorted(kinds["file"].items())),
        shm_bytes=dict(sorted(kinds["shm"].items())),
        huge_bytes=dict(sorted(kinds["huge"].items())),
        policy_bytes=policy_bytes,
        policy=dominant_policy(policy_bytes),
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


def read_numa_maps(proc: Path, pid: int, problems: Problems) -> NumaMaps | None:
    """Read and parse ``PROC/PID/numa_maps``; None (with a reason) when it cannot be read."""
    path = proc / str(pid) / "numa_maps"
    t0 = time.perf_counter()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        problems.add(describe_oserror(path, exc))
        return None
    parsed = parse_numa_maps(data.decode("utf-8", "replace"))
    return parsed.model_copy(update={"read_seconds": time.perf_counter() - t0})
