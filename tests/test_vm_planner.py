"""The planner's verdicts against a real kernel: the seed story at 1/64 scale in the 8-node guest.

Each guest node (512 MiB) stands for a seed-box node of 32 GiB. ``tests/vm/story.py`` plans the
seed model (DeepSeek-R1-Distill-Qwen-32B, vLLM 0.8 rules: KV 4 GiB when unset, no start-up check)
on the guest's own topology and node memory scaled by 64, then starts one process per rank that
allocates the rank's ``need_bytes / 64`` under ``numactl --membind`` of the rank's node. ``oom``
plans must be SIGKILLed by the kernel (a CONSTRAINT_MEMORY_POLICY report naming that node), ``fits``
plans must hold their memory.
"""

from __future__ import annotations

import json

import pytest

from tests.vm.fixtures import numa_vm  # noqa: F401 - the session fixture
from tests.vm.harness import NumaVm
from tests.vm.layouts import MIB

pytestmark = pytest.mark.vm

SECTION = "=====8<===== "
OLD = {"vllm_version": "0.8.5", "max_model_len": 8192}
#: (configuration, the story's verdict)
STORY = [
    ({"tp": 2, **OLD}, "oom"),  # the seed: 30.5 GiB of weights per rank + KV on a 32 GiB node
    ({"tp": 2, "kv_gib": 1, **OLD}, "oom"),  # shrinking the KV cache alone does not help
    ({"tp": 4, **OLD}, "fits"),
    ({"tp": 4, "kv_gib": 20, **OLD}, "oom"),  # TP=4 with too much KV
    ({"tp": 8, **OLD}, "fits"),
]
COMMAND = f"""
.venv/bin/python -m tests.vm.story '{json.dumps([c for c, _ in STORY])}' || exit 3
echo '{SECTION}explain'
.venv/bin/python -m numatop_llm explain --all --json
"""


def test_planner_verdicts_match_the_kernel(numa_vm: NumaVm) -> None:  # noqa: F811
    res = numa_vm.run("seed8", COMMAND, timeout=540).check()
    story, _, explain = res.stdout.partition(SECTION + "explain\n")
    results = [json.loads(line) for line in story.splitlines() if line.startswith("{")]
    kills = {e["pid"]: e for e in json.loads(explain)["explanations"]}
    assert len(results) == len(STORY)

    for (cfg, expected), out in zip(STORY, results, strict=True):
        where = out["summary"]
        assert out["errors"] == [], where
        assert out["verdict"] == expected, where
        assert not out["timed_out"], where
        assert len(out["ranks"]) == cfg["tp"]
        assert [r["node"] for r in out["ranks"]] == list(range(cfg["tp"]))  # auto bind: rank i on node i
        for r in out["ranks"]:
            rank = f"{where} rank {r['rank']} on node {r['node']}: {r}"
            ratio = r["need_bytes"] / r["node_budget_bytes"]
            if r["verdict"] == "fits":
                assert ratio <= 0.9, rank  # a clear verdict (10% spare at least), not a coin toss at the boundary
                assert r["held"] and not r["killed"] and r["returncode"] == 0, rank
                assert r["touched_bytes"] == r["alloc_bytes"], rank
                assert r["pid"] not in kills, rank
            else:
                assert r["verdict"] == "oom" and ratio >= 1.03, rank
                assert r["killed"] and not r["held"], rank
                # the kernel stopped it within the budget the planner gave the node (less the
                # interpreter, page tables and the kernel's reserves)
                assert r["guest_budget_bytes"] - 112 * MIB <= r["touched_bytes"] <= r["guest_budget_bytes"], rank
                e = kills[r["pid"]]
                assert e["constraint"] == "CONSTRAINT_MEMORY_POLICY" and e["nodes"] == [r["node"]], rank
