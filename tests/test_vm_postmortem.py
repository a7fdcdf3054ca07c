"""The -9 post-mortem on real membind OOM kills in the 8-node guest (``numatop-llm explain``)."""

from __future__ import annotations

import json

import pytest

from numatop_llm.statedir import merge_gone
from tests.vm.fixtures import numa_vm  # noqa: F401 - the session fixture
from tests.vm.harness import NumaVm
from tests.vm.layouts import MIB

SECTION = "=====8<===== "


def sections(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in stdout.split(SECTION)[1:]:
        name, _, body = chunk.partition("\n")
        out[name.strip()] = body
    return out


# A bare process bound to node 4 asks for 1 GiB (node 4 has ~460 MiB): the kernel kills it.
BARE = f"""
numactl --membind=4 --cpunodebind=4 python3 -I -S tests/vm/hog.py --bytes {1024 * MIB} &
pid=$!
wait $pid
rc=$?
echo "{SECTION}rc"; echo "$rc $pid"
echo "{SECTION}json"; .venv/bin/python -m numatop_llm explain --pid $pid --json; echo "exit $?"
echo "{SECTION}text"; .venv/bin/python -m numatop_llm explain --pid $pid; echo "exit $?"
echo "{SECTION}alive"; .venv/bin/python -m numatop_llm explain --pid $$; echo "exit $?"
echo "{SECTION}node"; grep MemTotal /sys/devices/system/node/node4/meminfo
"""


@pytest.mark.vm
def test_membind_oom_kill_of_a_process_is_explained(numa_vm: NumaVm) -> None:  # noqa: F811
    res = numa_vm.run("seed8", BARE, timeout=300).check()
    sec = sections(res.stdout)
    rc, pid = map(int, sec["rc"].split())
    assert rc == 137  # SIGKILL, as a shell shows it
    node_total = int(sec["node"].split()[-2]) * 1024

    doc, _, exit_line = sec["json"].rpartition("exit ")
    assert exit_line.strip() == "0"
    data = json.loads(doc)
    assert data["degraded"] == []
    (e,) = data["explanations"]
    assert (e["pid"], e["who"], e["constraint"], e["nodes"]) == (pid, "python3", "CONSTRAINT_MEMORY_POLICY", [4])
    kill = e["kill"]
    assert kill["nodemask"] == [4] and kill["invoker"] == "python3"
    # it filled most of its node before the kernel killed it, and no more than the node holds
    assert 0.75 * node_total <= kill["anon_rss_bytes"] <= node_total
    assert e["when"] is not None

    text = sec["text"]
    assert text.startswith(f"python3 (pid {pid}) was killed by the kernel's OOM killer at ")
    assert "strictly bound (membind) to node 4, and that node ran out" in text
    assert f"node 4 holds {node_total / 2**30:.1f} GiB in all" in text  # its budget, from the live node
    assert text.rstrip().endswith("exit 0")
    # a process that was not killed: nothing to explain, exit 1
    assert "no OOM kill found for pid" in sec["alive"] and sec["alive"].rstrip().endswith("exit 1")


# A vLLM-shaped engine at TP=2 (tests/vm/bin/vllm): Worker_TP0 on node 2 (CPU 4), Worker_TP1 on
# node 3 (CPU 6), each holding 96 MiB. The exporter watches it as a monitor would, every second,
# and keeps watching after Worker_TP1 grows past its node and is killed; then `explain` (no
# arguments: the last engine seen) must still name the rank.
ENGINE = f"""
export XDG_STATE_HOME=/tmp/pm-state
R=/tmp/pm-engine; mkdir -p $R/model $R/ready
rec=$XDG_STATE_HOME/numatop-llm/last-engine.json
VLLM_CPU_KVCACHE_SPACE=4 VLLM_CPU_OMP_THREADS_BIND='4|6' FAKE_VLLM_READY_DIR=$R/ready \\
    FAKE_VLLM_WORKER_BYTES={96 * MIB} FAKE_VLLM_GROW_BYTES={1024 * MIB} FAKE_VLLM_LIFETIME=240 \\
    tests/vm/bin/vllm serve $R/model --tensor-parallel-size 2 &
api=$!
i=0; while [ ! -f $R/ready/TP0 ] || [ ! -f $R/ready/TP1 ]; do
    sleep 0.1; i=$((i + 1)); [ $i -gt 1200 ] && {{ echo "workers not ready" >&2; exit 3; }}
done
tp0=$(cut -d' ' -f1 $R/ready/TP0); tp1=$(cut -d' ' -f1 $R/ready/TP1)
.venv/bin/python -m numatop_llm export --pid $api --listen 127.0.0.1:0 --interval 1 >$R/export.log 2>&1 &
exp=$!
i=0; while ! grep -q "\\"pid\\": $tp1" $rec 2>/dev/null; do
    sleep 0.1; i=$((i + 1)); [ $i -gt 1200 ] && {{ cat $R/export.log >&2; exit 4; }}
done
cp $rec $R/before.json
kill -USR1 $tp1
i=0; while kill -0 $tp1 2>/dev/null; do sleep 0.1; i=$((i + 1)); [ $i -gt 1200 ] && exit 5; done
# the exporter sees the tree without Worker_TP1 and saves the engine again
i=0; while cmp -s $rec $R/before.json; do
    sleep 0.1; i=$((i + 1)); [ $i -gt 1200 ] && {{ echo "record not rewritten" >&2; cat $R/export.log >&2; exit 6; }}
done
kill $exp; wait $exp
echo "{SECTION}pids"; echo "$api $tp0 $tp1"
echo "{SECTION}record"; cat $rec; echo
echo "{SECTION}json"; .venv/bin/python -m numatop_llm explain --json; echo "exit $?"
echo "{SECTION}text"; .venv/bin/python -m numatop_llm explain --pid $tp1; echo "exit $?"
kill $api; wait $api
true
"""


@pytest.mark.vm
def test_worker_oom_kill_is_explained_for_the_last_engine_seen(numa_vm: NumaVm) -> None:  # noqa: F811
    res = numa_vm.run("seed8", ENGINE, timeout=420).check()
    sec = sections(res.stdout)
    api, tp0, tp1 = map(int, sec["pids"].split())

    # the monitor's record still holds the dead worker, marked gone; the live worker is not
    record = json.loads(sec["record"])
    procs = {p["pid"]: p for p in record["processes"]}
    assert record["root_pid"] == api
    assert procs[tp1]["gone"] is True and procs[tp1]["label"] == "Worker_TP1" and procs[tp1]["policy_nodes"] == [3]
    assert "gone" not in procs[tp0]

    doc, _, exit_line = sec["json"].rpartition("exit ")
    assert exit_line.strip() == "0"
    (e,) = json.loads(doc)["explanations"]  # only the engine's kill, not other tests' kills
    assert (e["pid"], e["who"], e["constraint"], e["nodes"]) == (tp1, "Worker_TP1", "CONSTRAINT_MEMORY_POLICY", [3])
    node_total = record["nodes"]["3"]["total_bytes"]
    assert 0.75 * node_total <= e["kill"]["anon_rss_bytes"] <= node_total
    text = e["text"]
    assert text.startswith(f"Worker_TP1 (pid {tp1}) was killed by the kernel's OOM killer")
    assert f"node 3 holds {node_total / 2**30:.1f} GiB in all" in text
    assert "rank 1 of TP=2 PP=1, VLLM_CPU_KVCACHE_SPACE=4 GiB" in text
    assert sec["text"].startswith(text) and sec["text"].rstrip().endswith("exit 0")


def test_record_keeps_processes_that_left_the_same_engine() -> None:
    before = {"root_pid": 10, "seen_at": 100.0, "processes": [{"pid": 10}, {"pid": 11, "rank": 0}, {"pid": 12}]}
    now = {"root_pid": 10, "seen_at": 101.0, "processes": [{"pid": 10}, {"pid": 11, "rank": 0}]}
    merged = merge_gone(before, now, boot=50.0)
    assert merged["processes"] == [{"pid": 10}, {"pid": 11, "rank": 0}, {"pid": 12, "gone": True}]
    assert merge_gone(before, now, boot=150.0) is now  # the record is from an earlier boot
    other = {"root_pid": 20, "seen_at": 101.0, "processes": [{"pid": 20}]}
    assert merge_gone(before, other, boot=50.0) is other  # another engine
    assert merge_gone(None, now) is now
