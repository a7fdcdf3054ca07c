"""``numatop-llm snapshot --json`` inside real multi-NUMA kernels agrees with the kernel itself.

Each layout boots once (QEMU TCG); one guest command collects ``numactl --hardware``, the
node files under /sys and the snapshot, and the host compares them with each other and with
the layout QEMU was asked for.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.vm.fixtures import numa_vm  # noqa: F401 - the session fixture
from tests.vm.harness import NumaVm
from tests.vm.layouts import LAYOUTS, MIB

pytestmark = pytest.mark.vm

SECTION = "=====8<===== "
# The snapshot runs bound to node 0 (CPUs and memory), after a warm-up run that filled the page
# cache: its own allocations then land on node 0 only, and every other node's free memory must
# match the kernel's figure read just before to the page (give or take the kernel's own churn).
SNAPSHOT = "numactl --membind=0 --cpunodebind=0 .venv/bin/python -m numatop_llm snapshot --json"
COLLECT = f"""
{SNAPSHOT} >/dev/null || exit 3
echo '{SECTION}numactl'; numactl --hardware
echo '{SECTION}sys'
for f in /sys/devices/system/node/node*/cpulist /sys/devices/system/node/node*/distance \
    /sys/devices/system/node/online /sys/devices/system/node/has_cpu /sys/devices/system/node/has_memory \
    /sys/devices/system/cpu/online; do echo "$f:$(cat $f)"; done
echo '{SECTION}packages'; grep -H . /sys/devices/system/cpu/cpu*/topology/physical_package_id
echo '{SECTION}meminfo'; grep -H -E 'MemTotal|MemFree' /sys/devices/system/node/node*/meminfo
echo '{SECTION}snapshot'; {SNAPSHOT}
echo '{SECTION}meminfo-after'; grep -H -E 'MemTotal|MemFree' /sys/devices/system/node/node*/meminfo
echo '{SECTION}proc-meminfo'; grep MemTotal /proc/meminfo
"""


def sections(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in stdout.split(SECTION)[1:]:
        name, _, body = chunk.partition("\n")
        out[name.strip()] = body
    return out


def parse_numactl_hardware(text: str) -> dict:
    """``numactl --hardware`` as {nodes, cpus{n}, size_mib{n}, free_mib{n}, distances{n: row}}."""
    res: dict = {"cpus": {}, "size_mib": {}, "free_mib": {}, "distances": {}}
    m = re.search(r"available: (\d+) nodes \(([^)]*)\)", text)
    assert m, text
    res["count"] = int(m.group(1))
    for line in text.splitlines():
        if m := re.match(r"node (\d+) cpus:(.*)$", line):
            res["cpus"][int(m.group(1))] = [int(x) for x in m.group(2).split()]
        elif m := re.match(r"node (\d+) size: (\d+) MB", line):
            res["size_mib"][int(m.group(1))] = int(m.group(2))
        elif m := re.match(r"node (\d+) free: (\d+) MB", line):
            res["free_mib"][int(m.group(1))] = int(m.group(2))
    header = text.split("node distances:")[1].strip().splitlines()
    cols = [int(x) for x in header[0].split()[1:]]
    for row in header[1:]:
        head, *vals = row.split()
        res["distances"][int(head.rstrip(":"))] = dict(zip(cols, (int(v) for v in vals), strict=True))
    return res


def parse_meminfo(meminfo: str) -> dict[int, dict[str, int]]:
    nodes: dict[int, dict[str, int]] = {}
    for line in meminfo.splitlines():
        m = re.match(r"/sys/devices/system/node/node(\d+)/meminfo:Node \d+ (MemTotal|MemFree):\s+(\d+) kB", line)
        if m:
            nodes.setdefault(int(m.group(1)), {})[m.group(2)] = int(m.group(3)) * 1024
    return nodes


def parse_sys(text: str, meminfo: str, packages: str) -> dict:
    files: dict[str, str] = {}
    for line in text.splitlines():
        path, _, value = line.partition(":")
        files[path] = value.strip()
    nodes: dict[int, dict] = {}
    for path, value in files.items():
        if m := re.match(r"/sys/devices/system/node/node(\d+)/(cpulist|distance)$", path):
            nodes.setdefault(int(m.group(1)), {})[m.group(2)] = value
    for nid, values in parse_meminfo(meminfo).items():
        nodes.setdefault(nid, {}).update(values)
    pkg: dict[int, int] = {}
    for line in packages.splitlines():
        m = re.match(r"/sys/devices/system/cpu/cpu(\d+)/topology/physical_package_id:(\d+)", line)
        if m:
            pkg[int(m.group(1))] = int(m.group(2))
    return {"files": files, "nodes": nodes, "package_of_cpu": pkg}


def expand(cpulist: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, cpulist.split(",")):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_snapshot_matches_the_guest_kernel(numa_vm: NumaVm, layout: str) -> None:  # noqa: F811
    lay = LAYOUTS[layout]
    res = numa_vm.run(layout, COLLECT, timeout=300).check()
    sec = sections(res.stdout)
    hw = parse_numactl_hardware(sec["numactl"])
    sysfs = parse_sys(sec["sys"], sec["meminfo"], sec["packages"])
    snap = json.loads(sec["snapshot"])
    after = parse_meminfo(sec["meminfo-after"])
    ids = list(range(len(lay.nodes)))

    # the kernel did what QEMU was asked for
    assert hw["count"] == len(lay.nodes)
    assert sysfs["files"]["/sys/devices/system/node/online"] == f"0-{len(lay.nodes) - 1}"
    for i, spec in enumerate(lay.nodes):
        assert hw["cpus"][i] == list(spec.cpus)
        assert hw["distances"][i] == dict(zip(ids, lay.distances[i], strict=True))
        # the kernel keeps some of each node's memory for itself (struct pages, the kernel image on node 0)
        assert 0.75 * spec.mem_mib <= hw["size_mib"][i] <= spec.mem_mib
    assert expand(sysfs["files"]["/sys/devices/system/node/has_cpu"]) == [i for i in ids if lay.nodes[i].cpus]
    assert expand(sysfs["files"]["/sys/devices/system/node/has_memory"]) == ids

    # the snapshot says the same as numactl and /sys
    assert [n["id"] for n in snap["nodes"]] == ids
    assert snap["cpus_online"] == expand(sysfs["files"]["/sys/devices/system/cpu/online"]) == list(range(lay.cpus))
    assert snap["cpus_offline"] == []
    assert snap["degraded"] == []
    assert snap["kernel"].endswith("-amd64")  # the guest's Debian kernel, not the host's
    for node in snap["nodes"]:
        i = node["id"]
        kernel = sysfs["nodes"][i]
        assert node["cpus"] == expand(kernel["cpulist"]) == hw["cpus"][i]
        assert node["distances"] == {str(j): d for j, d in zip(ids, map(int, kernel["distance"].split()), strict=True)}
        assert node["total_bytes"] == kernel["MemTotal"]
        assert node["total_bytes"] // MIB == hw["size_mib"][i]
        # free memory, read by /sys just before and just after the snapshot: the snapshot's own
        # process and page cache sit on node 0; elsewhere only the kernel's churn (4 MiB)
        slack = (64 if i == 0 else 4) * MIB
        around = (kernel["MemFree"], after[i]["MemFree"])
        assert min(around) - slack <= node["free_bytes"] <= max(around) + slack, (i, node["free_bytes"], around)
        # numactl read earlier still (and in whole MB): a looser bound
        assert abs(node["free_bytes"] - hw["free_mib"][i] * MIB) <= slack + 16 * MIB
        assert 0 < node["free_bytes"] < node["total_bytes"]
        expect_pkg = {sysfs["package_of_cpu"][c] for c in node["cpus"]}
        assert node["package"] == (expect_pkg.pop() if expect_pkg else None)
    mem_total = int(re.search(r"MemTotal:\s+(\d+) kB", sec["proc-meminfo"]).group(1)) * 1024
    assert snap["system_mem_total_bytes"] == mem_total
    assert abs(sum(n["total_bytes"] for n in snap["nodes"]) - mem_total) <= 16 * MIB

    # sockets: the CPUs QEMU put in each socket, and the nodes with CPUs there
    pk = {p["id"]: p for p in snap["packages"]}
    assert sorted(pk) == list(range(lay.sockets))
    for s in range(lay.sockets):
        cpus = [c for c in range(lay.cpus) if lay.socket_of(c) == s]
        assert pk[s]["cpus"] == cpus
        assert pk[s]["nodes"] == [i for i in ids if lay.nodes[i].cpus and lay.socket_of(lay.nodes[i].cpus[0]) == s]
    assert snap["cores"] == lay.cpus


# One SnapshotReader (as the dashboard keeps one) across memory hot-remove and re-add on node 1:
# node totals must follow the kernel on every read. Then CPU 3 goes offline for a fresh snapshot.
HOTPLUG = r"""
import json, os, sys
from pathlib import Path
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import SnapshotReader

def total(node):
    for line in Path(f"/sys/devices/system/node/node{node}/meminfo").read_text().splitlines():
        if "MemTotal" in line:
            return int(line.split()[-2]) * 1024

reader = SnapshotReader(SysRoots())
out = {"block": int(Path("/sys/devices/system/memory/block_size_bytes").read_text(), 16)}
def sample(name):
    snap = reader.read()
    out[name] = {"snapshot": {str(n.id): n.total_bytes for n in snap.topology.nodes}, "kernel": {str(i): total(i) for i in (0, 1)}}
sample("before")
blocks = sorted(Path("/sys/devices/system/node/node1").glob("memory[0-9]*"), key=lambda p: int(p.name[6:]))
for b in reversed(blocks):
    try:
        (b / "state").write_text("offline")
    except OSError:
        continue
    out["offlined"] = b.name
    break
sample("offline")
(b / "state").write_text("online")
sample("online")
print(json.dumps(out))
"""
CPU_OFFLINE = f"""
.venv/bin/python -c '{HOTPLUG}' || exit 3
echo '{SECTION}cpu'
echo 0 > /sys/devices/system/cpu/cpu3/online || exit 4
.venv/bin/python -m numatop_llm snapshot --json; rc=$?
echo 1 > /sys/devices/system/cpu/cpu3/online
exit $rc
"""


def test_snapshot_follows_memory_and_cpu_hotplug(numa_vm: NumaVm) -> None:  # noqa: F811
    res = numa_vm.run("two-node", CPU_OFFLINE, timeout=300).check()
    mem_text, _, cpu_text = res.stdout.partition(SECTION + "cpu\n")
    mem = json.loads(mem_text)
    block = mem["block"]
    assert mem.get("offlined"), "no memory block of node 1 could be offlined"
    for name in ("before", "offline", "online"):
        assert mem[name]["snapshot"] == mem[name]["kernel"], name  # every read re-reads the node totals
    assert mem["offline"]["snapshot"]["1"] == mem["before"]["snapshot"]["1"] - block
    assert mem["offline"]["snapshot"]["0"] == mem["before"]["snapshot"]["0"]
    assert mem["online"]["snapshot"]["1"] == mem["before"]["snapshot"]["1"]

    snap = json.loads(cpu_text)
    assert snap["cpus_offline"] == [3]
    assert snap["cpus_online"] == [0, 1, 2]
    assert [n["cpus"] for n in snap["nodes"]] == [[0, 1], [2]]
    assert snap["degraded"] == []
