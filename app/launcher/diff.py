"""Old vs new launch spec in plain lines, secrets masked: what the relaunch will change."""

from __future__ import annotations

from collections.abc import Sequence

from numatop_llm.launcher.argv import args_start
from numatop_llm.launcher.spec import LaunchSpec
from numatop_llm.probes.secrets import is_secret_name, mask_argv

UNSET = "(unset)"


def _units(argv: Sequence[str]) -> dict[str, str | None]:
    """``--flag value`` units of the serve arguments, keyed by normalised flag name (last one wins)."""
    out: dict[str, str | None] = {}
    i = args_start(argv)
    pos = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and len(a) > 1 and not _is_number(a):
            name, eq, val = a.partition("=")
            key = "--" + name[2:].replace("_", "-") if name.startswith("--") else name
            key = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size"}.get(key, key)
            if eq:
                out[key] = val
                i += 1
            elif i + 1 < len(argv) and (not argv[i + 1].startswith("-") or _is_number(argv[i + 1])):
                out[key] = argv[i + 1]
                i += 2
            else:
                out[key] = None
                i += 1
        else:
            out[f"<arg {pos}>"] = a
            pos += 1
            i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _show(value: str | None, present: bool) -> str:
    if not present:
        return UNSET
    return "(flag)" if value is None else value


def diff(old: LaunchSpec, new: LaunchSpec) -> list[str]:
    """What changes from ``old`` to ``new``, one line per change, secrets masked; ``[]`` when nothing does."""
    lines: list[str] = []
    old_cmd, new_cmd = old.masked_command(), new.masked_command()
    if old_cmd != new_cmd:
        lines += [f"- command: {old_cmd}", f"+ command: {new_cmd}"]
    ou, nu = _units(mask_argv(old.argv)), _units(mask_argv(new.argv))
    for key in [*ou, *(k for k in nu if k not in ou)]:
        if key not in ou or key not in nu or ou[key] != nu[key]:
            lines.append(f"  {key}: {_show(ou.get(key), key in ou)} → {_show(nu.get(key), key in nu)}")
    oe, ne = old.environment(), new.environment()
    for name in sorted(set(oe) | set(ne)):
        a, b = oe.get(name), ne.get(name)
        if a == b:
            continue
        if is_secret_name(name):
            shown = ("set" if a is not None else UNSET, "set" if b is not None else UNSET)
            lines.append(f"  env {name}: {shown[0]} → {shown[1]} (secret, value masked)")
        else:
            lines.append(f"  env {name}: {a if a is not None else UNSET} → {b if b is not None else UNSET}")
    if old.numactl != new.numactl:
        lines.append(f"  numactl: {' '.join(old.numactl) or '(none)'} → {' '.join(new.numactl) or '(none)'}")
    if old.cpus_allowed != new.cpus_allowed:
        from numatop_llm.probes.cpulist import format_cpulist

        a, b = format_cpulist(old.cpus_allowed) or "(all)", format_cpulist(new.cpus_allowed) or "(all)"
        lines.append(f"  CPU affinity: {a} → {b}")
    for label, a, b in (
        ("cwd", old.cwd, new.cwd),
        ("user", f"{old.uid}:{old.gid}", f"{new.uid}:{new.gid}"),
        ("cgroups", dict(old.cgroups), dict(new.cgroups)),
    ):
        if a != b:
            lines.append(f"  {label}: {a} → {b}")
    return lines
