"""Rewriting a ``vllm serve`` command line: read, set and remove one flag, leaving the rest as it was.

The interpreter, the script and the positional model are never touched: flags are looked up only
after ``serve`` (or after ``-m module``). vLLM accepts ``--flag value``, ``--flag=value`` and
underscores in flag names (``--tensor_parallel_size``); all three forms are recognised.
"""

from __future__ import annotations

from collections.abc import Sequence

#: canonical flag → every spelling vLLM accepts for it (underscore forms are handled generically)
ALIASES: dict[str, tuple[str, ...]] = {
    "--tensor-parallel-size": ("--tensor-parallel-size", "-tp"),
    "--pipeline-parallel-size": ("--pipeline-parallel-size", "-pp"),
}


def args_start(argv: Sequence[str]) -> int:
    """Index of the first argument that belongs to ``vllm serve`` (after ``serve MODEL`` or ``-m mod``)."""
    for i, a in enumerate(argv):
        if a == "serve" and i > 0:
            j = i + 1
            if j < len(argv) and not argv[j].startswith("-"):
                j += 1  # the positional model
            return j
        if a == "-m" and i + 1 < len(argv):
            return i + 2
    return len(argv)


def _norm(flag: str) -> str:
    if flag.startswith("--"):
        return "--" + flag[2:].replace("_", "-")
    return flag


def _names(flag: str) -> set[str]:
    return {_norm(n) for n in ALIASES.get(flag, (flag,))}


def _occurrences(argv: Sequence[str], flag: str) -> list[tuple[int, bool]]:
    """(index, value-is-inline) of every occurrence of ``flag`` in the serve arguments."""
    names = _names(flag)
    out = []
    for i in range(args_start(argv), len(argv)):
        name, eq, _ = argv[i].partition("=")
        if _norm(name) in names:
            out.append((i, bool(eq)))
    return out


def get_flag(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` (the last occurrence wins, as with argparse); None when absent."""
    occ = _occurrences(argv, flag)
    if not occ:
        return None
    i, inline = occ[-1]
    if inline:
        return argv[i].partition("=")[2]
    return argv[i + 1] if i + 1 < len(argv) else None


def has_flag(argv: Sequence[str], flag: str) -> bool:
    return bool(_occurrences(argv, flag))


def remove_flag(argv: Sequence[str], flag: str, *, takes_value: bool = True) -> list[str]:
    """``argv`` without any occurrence of ``flag`` (and its value)."""
    drop: set[int] = set()
    for i, inline in _occurrences(argv, flag):
        drop.add(i)
        if takes_value and not inline and i + 1 < len(argv):
            drop.add(i + 1)
    return [a for i, a in enumerate(argv) if i not in drop]


def set_flag(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag`` set to ``value``: the first occurrence is rewritten in place (keeping its
    spelling), later duplicates are dropped; when absent, ``flag value`` is appended."""
    occ = _occurrences(argv, flag)
    if not occ:
        return [*argv, flag, value]
    out = list(argv)
    first, inline = occ[0]
    name = out[first].partition("=")[0]
    if inline:
        out[first] = f"{name}={value}"
    elif first + 1 < len(out):
        out[first + 1] = value
    else:
        out.append(value)
    drop: set[int] = set()
    for i, inl in occ[1:]:
        drop.add(i)
        if not inl and i + 1 < len(out):
            drop.add(i + 1)
    return [a for i, a in enumerate(out) if i not in drop]
