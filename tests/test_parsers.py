"""Parsers of kernel text: exact results on real samples, and never an exception on garbage."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from numatop_llm.probes.cgroup import parse_numa_stat
from numatop_llm.probes.cpulist import format_cpulist, parse_cpulist, parse_cpumask
from numatop_llm.probes.numa_maps import parse_numa_maps, parse_policy
from numatop_llm.probes.threads import parse_stat
from numatop_llm.probes.topology import parse_meminfo

NUMA_MAPS = """\
55d0c0a00000 default file=/usr/bin/python3.11 mapped=120 mapmax=3 N0=120 kernelpagesize_kB=4
55d0c1a00000 default heap anon=2048 dirty=2048 N0=2000 N1=48 kernelpagesize_kB=4
7f0000000000 bind:1 anon=51200 dirty=51200 active=0 N1=51200 kernelpagesize_kB=4
7f1000000000 interleave:0-1 anon=100 dirty=100 N0=50 N1=50 kernelpagesize_kB=4
7f2000000000 bind:1 file=/dev/shm/psm_abc mapped=256 N1=256 kernelpagesize_kB=4
7f3000000000 default file=/anon_hugepage\\040(deleted) huge anon=2 dirty=2 N0=2 kernelpagesize_kB=2048
7f4000000000 prefer (many):0-1 anon=10 dirty=10 N0=10 kernelpagesize_kB=4
7ffd00000000 default stack anon=33 dirty=33 N0=33 kernelpagesize_kB=4
7ffd10000000 default
7ffd20000000 bind:1 anon=3 dirty=3 N1=3 kernelpage"""


def test_numa_maps_per_node_bytes_and_kinds():
    nm = parse_numa_maps(NUMA_MAPS)
    kib = 1024
    assert nm.node_bytes[1] == (48 + 51200 + 50 + 256 + 3) * 4 * kib
    assert nm.node_bytes[0] == (120 + 2000 + 50 + 10 + 33) * 4 * kib + 2 * 2048 * kib
    assert nm.shm_bytes == {1: 256 * 4 * kib}
    assert nm.huge_bytes == {0: 2 * 2048 * kib}
    assert nm.file_bytes == {0: 120 * 4 * kib}
    # the explicit strict bind holds most bytes: it is the process's policy
    assert nm.policy.text == "bind:1" and nm.policy.strict and nm.policy.nodes == (1,)
    assert nm.policy_bytes["prefer (many):0-1"] == 10 * 4 * kib


def test_policy_words():
    assert parse_policy("interleave:0-3").nodes == (0, 1, 2, 3)
    assert parse_policy("bind=static:2").mode == "bind"
    assert parse_policy("prefer:5").mode == "prefer"
    assert parse_policy("weighted interleave:0,2").mode == "weighted-interleave"
    assert parse_policy("local").nodes == ()


def test_stat_with_spaces_and_parens_in_comm():
    line = (
        "4242 (VLLM::Worker (TP) 1) S 4200 4200 4200 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 47 0 12345 "
        + " ".join(["0"] * 16)
        + " 7 0 0 0 0 0"
    )
    st = parse_stat(line)
    assert st is not None
    assert st.comm == "VLLM::Worker (TP) 1"
    assert (st.ppid, st.utime, st.stime, st.starttime, st.processor) == (4200, 150, 25, 12345, 7)
    assert parse_stat(line[:40]) is None


def test_meminfo_node_and_system_forms():
    node = parse_meminfo("Node 3 MemTotal:       32979968 kB\nNode 3 HugePages_Total:     4\n")
    assert node == {"MemTotal": 32979968 * 1024, "HugePages_Total": 4}
    assert parse_meminfo("Active(file):     100 kB\n")["Active(file)"] == 102400


def test_cpulists_and_masks():
    assert parse_cpulist("0-3,8,10-11\x00\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("0-7:2") == [0, 2, 4, 6]
    assert parse_cpulist("") == []
    assert parse_cpumask("00000000,0000000f") == [0, 1, 2, 3]
    assert parse_cpumask("00000001,00000000") == [32]
    assert format_cpulist([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_cgroup_numa_stat():
    text = "anon N0=4096 N1=8192\nfile N0=100 N1=0\nkernel_stack N0=5 N1=5\n"
    assert parse_numa_stat(text) == {0: 4196, 1: 8192}


@given(st.sets(st.integers(0, 4000), max_size=200))
def test_cpulist_roundtrip(ids):
    assert parse_cpulist(format_cpulist(ids)) == sorted(ids)


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_numa_maps_never_raises(text):
    nm = parse_numa_maps(text)
    assert all(v >= 0 for v in nm.node_bytes.values())


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_stat_meminfo_never_raise(text):
    parse_stat(text)
    parse_meminfo(text)
    parse_numa_stat(text)


@given(st.lists(st.text(alphabet="0123456789abcdefN=:- \n", max_size=60), max_size=30))
def test_numa_maps_truncated_real_lines(chunks):
    # Real lines cut at random places (a file read while the process changes its mappings)
    text = NUMA_MAPS[: len("".join(chunks)) % len(NUMA_MAPS)]
    parse_numa_maps(text)
