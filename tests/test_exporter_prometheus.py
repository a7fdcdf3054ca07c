"""A real Prometheus scrapes the exporter and answers PromQL; the alert rules and the dashboard hold up.

Prometheus is the Debian package's binary, started here on 127.0.0.1 with a temporary config and
storage directory, bounded in time and stopped by PID (the distro service is never started).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from numatop_llm.exporter import Exporter
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import SnapshotReader
from tests.conftest import IN_CI, REPO
from tests.exporter_support import ExporterProcess, PrometheusServer, VllmShapedTree, family_names

RULES = REPO / "contrib" / "prometheus" / "numatop-llm-rules.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "numatop-llm.json"
LIVE = SysRoots()
MIB = 2**20
METRIC = re.compile(r"\bnumatop_llm_[a-z_]+")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed (tests/run.sh installs the Debian package prometheus)")
        pytest.skip(f"{name} not installed: apt-get install prometheus")
    return path


@pytest.fixture
def promtool() -> str:
    return _tool("promtool")


@pytest.fixture
def prometheus() -> str:
    return _tool("prometheus")


@pytest.fixture
def numactl() -> str:
    return _tool("numactl")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    out = []
    for p in dashboard()["panels"]:
        out += [t["expr"] for t in p.get("targets", [])]
    return out


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in as Grafana would."""
    return (
        expr.replace("$instance", ".+")
        .replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$__interval", "15s")
    )


# ------------------------------------------------------------------------------------------------
# Alert rules
# ------------------------------------------------------------------------------------------------


def test_alert_rules_load_with_promtool(promtool):
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout


RULE_TESTS = """
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'numatop_llm_node_memory_available_bytes{{instance="h1",job="n",node="0"}}'
        values: '3x20'
      - series: 'numatop_llm_node_memory_total_bytes{{instance="h1",job="n",node="0"}}'
        values: '100x20'
      - series: 'numatop_llm_node_memory_available_bytes{{instance="h1",job="n",node="1"}}'
        values: '50x20'
      - series: 'numatop_llm_node_memory_total_bytes{{instance="h1",job="n",node="1"}}'
        values: '100x20'
      - series: 'numatop_llm_rank_headroom_bytes{{instance="h1",job="n",rank="0",node="0"}}'
        values: '4x20'
      - series: 'numatop_llm_rank_headroom_bytes{{instance="h1",job="n",rank="1",node="1"}}'
        values: '40x20'
      - series: 'numatop_llm_rank_will_oom{{instance="h1",job="n",rank="0"}}'
        values: '1x20'
      - series: 'numatop_llm_rank_will_oom{{instance="h1",job="n",rank="1"}}'
        values: '0x20'
      - series: 'numatop_llm_oom_kills_total{{instance="h1",job="n",role="worker",rank="1"}}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'numatop_llm_oom_kills_total{{instance="h1",job="n",role="worker",rank="0"}}'
        values: '0x20'
      - series: 'numatop_llm_rank_off_node_threads{{instance="h1",job="n",rank="0"}}'
        values: '10x20'
      - series: 'numatop_llm_rank_threads{{instance="h1",job="n",rank="0"}}'
        values: '40x20'
      - series: 'numatop_llm_rank_off_node_threads{{instance="h1",job="n",rank="1"}}'
        values: '2x20'
      - series: 'numatop_llm_rank_threads{{instance="h1",job="n",rank="1"}}'
        values: '40x20'
    alert_rule_test:
      - eval_time: 5m
        alertname: NumaNodeHeadroomLow
        exp_alerts:
          - exp_labels: {{severity: warning, instance: h1, job: n, node: "0"}}
            exp_annotations:
              summary: "NUMA node 0 on h1 has less than 5% headroom"
              description: "Node 0 has 3% of its memory left (free + file cache + reclaimable slab)."
      - eval_time: 5m
        alertname: VllmRankStrictBindHeadroomLow
        exp_alerts:
          - exp_labels: {{severity: warning, instance: h1, job: n, node: "0", rank: "0"}}
            exp_annotations:
              summary: "vLLM rank 0 on h1 has under 5% headroom on node 0"
              description: "Strict-bind headroom of rank 0 is 4% of node 0."
      - eval_time: 0m
        alertname: VllmRankWillOom
        exp_alerts: []
      - eval_time: 5m
        alertname: VllmRankWillOom
        exp_alerts:
          - exp_labels: {{severity: critical, instance: h1, job: n, rank: "0"}}
            exp_annotations:
              summary: "vLLM rank 0 on h1 is predicted to be OOM-killed"
              description: "Its memory is strictly bound to one node and the node cannot hold what it needs. Run `numatop-llm` on the host for the plan (a larger TP, a smaller KV cache)."
      - eval_time: 2m
        alertname: VllmOomKill
        exp_alerts: []
      - eval_time: 5m
        alertname: VllmOomKill
        exp_alerts:
          - exp_labels: {{severity: critical, instance: h1, job: n, role: worker, rank: "1"}}
            exp_annotations:
              summary: "OOM kill of a vLLM process on h1"
              description: "The kernel OOM-killed a worker process (rank 1). `numatop-llm explain` on the host says why."
      - eval_time: 15m
        alertname: VllmRankThreadsOffNode
        exp_alerts:
          - exp_labels: {{severity: warning, instance: h1, job: n, rank: "0"}}
            exp_annotations:
              summary: "vLLM rank 0 on h1 runs 25% of its threads off its node"
              description: "Check VLLM_CPU_OMP_THREADS_BIND and the rank's bind node (numatop-llm shows both)."
"""


def test_alert_rules_fire_as_documented(promtool, tmp_path):
    """promtool's rule unit tests: node at 3% fires, node at 50% does not; will-OOM, OOM kill, off-node."""
    tests = tmp_path / "rules-test.yml"
    tests.write_text(RULE_TESTS.format(rules=json.dumps(str(RULES))))
    out = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


# ------------------------------------------------------------------------------------------------
# Dashboard
# ------------------------------------------------------------------------------------------------


def test_dashboard_is_a_fleet_dashboard():
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    inst = variables["instance"]
    assert inst["type"] == "query" and inst["multi"] and inst["includeAll"]
    assert "label_values(numatop_llm_" in inst["query"]["query"]
    titles = " | ".join(p["title"] for p in d["panels"])
    for want in ("Node fill", "headroom", "off their home node", "memory per node per rank", "OOM kills"):
        assert want.lower() in titles.lower(), want
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            # every query follows the host picker
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])


def test_dashboard_and_rules_only_use_metrics_the_exporter_serves(tmp_path, numactl):
    with VllmShapedTree(tmp_path, tp=2, mib=8, threads=2) as t:
        ex = Exporter(LIVE, pid=t.pid, interval=1, remember=False, log=lambda _m: None)
        try:
            ex.sample_once()
            served = family_names(generate_latest(ex.registry).decode())
        finally:
            ex.stop()
    used = set(METRIC.findall(DASHBOARD.read_text())) | set(METRIC.findall(RULES.read_text()))
    assert used, "no metric names found"
    assert used <= served, f"not served: {sorted(used - served)}"


# ------------------------------------------------------------------------------------------------
# A real Prometheus
# ------------------------------------------------------------------------------------------------


def check_ranks_through_promql(prom: PrometheusServer, target: str, pid: int, ranks: int, min_bytes: int) -> None:
    """Ask Prometheus for each rank's bytes on its node; compare with our own reading of the engine."""
    sel = f'instance="{target}"'
    prom.wait_for(f"up{{{sel}}} == 1", lambda r: len(r) == 1, timeout=60)
    result = prom.wait_for(f"numatop_llm_rank_local_bytes{{{sel}}}", lambda r: len(r) == ranks, timeout=60)
    by_rank = {r["metric"]["rank"]: (r["metric"]["node"], float(r["value"][1])) for r in result}
    assert sorted(by_rank) == [str(i) for i in range(ranks)]

    # the same bytes by joining engine memory per node with each rank's home node
    joined = prom.query(
        f'numatop_llm_engine_memory_bytes{{{sel}, role="worker"}}'
        f" * on (instance, job, rank, node) group_left () numatop_llm_rank_info{{{sel}}}"
    )
    assert {r["metric"]["rank"]: r["metric"]["node"] for r in joined} == {k: v[0] for k, v in by_rank.items()}

    snap = SnapshotReader(LIVE, pid).read()
    for w in snap.engine.workers():
        node, got = by_rank[str(w.rank)]
        assert node == str(w.home_node), (w.rank, node, w.home_node)
        assert got >= min_bytes, (w.rank, got)
        ours = w.node_bytes.get(w.home_node, 0)
        assert abs(got - ours) <= 0.1 * ours + 16 * MIB, (w.rank, got, ours)


def check_rules_and_dashboard_evaluate(prom: PrometheusServer) -> None:
    def evaluated(groups: list[dict]) -> bool:
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == 8 and all(r.get("health") == "ok" for r in rules)

    groups: list[dict] = []
    for _ in range(60):
        groups = prom.api("rules")["data"]["groups"]
        if evaluated(groups):
            break
        time.sleep(0.5)
    assert evaluated(groups), groups
    assert {g["name"] for g in groups} == {
        "numatop-llm-memory",
        "numatop-llm-placement",
        "numatop-llm-exporter",
    }
    # rate()/increase() need a few scrapes in their window
    prom.wait_for("count_over_time(numatop_llm_samples_total[1m])", lambda r: r and float(r[0]["value"][1]) >= 4)
    empty = []
    for expr in dashboard_exprs():
        result = prom.query(as_promql(expr))  # raises on a PromQL error
        if not result:
            empty.append(expr)
    assert not empty, f"dashboard queries with no data: {empty}"


@pytest.mark.slow
def test_real_prometheus_scrapes_the_exporter_on_a_vllm_shaped_tree(tmp_path, prometheus, numactl):
    with (
        VllmShapedTree(tmp_path / "tree", tp=2, mib=48, threads=8) as tree,
        ExporterProcess("--pid", str(tree.pid), "--interval", "0.5") as exporter,
    ):
        target = f"127.0.0.1:{exporter.port}"
        (tmp_path / "prom").mkdir()
        with PrometheusServer(tmp_path / "prom", [target], rule_files=[RULES]) as prom:
            check_ranks_through_promql(prom, target, tree.pid, ranks=2, min_bytes=48 * MIB)
            info = prom.query(f'numatop_llm_engine_info{{instance="{target}"}}')
            assert info[0]["metric"]["tp"] == "2"
            check_rules_and_dashboard_evaluate(prom)
        err = exporter.stop()
    assert exporter.proc.returncode == 0, err


@pytest.mark.vllm
def test_real_prometheus_scrapes_the_exporter_on_the_real_vllm_tp2_engine(vllm_engine_tp2, tmp_path, prometheus):
    eng = vllm_engine_tp2
    with ExporterProcess("--pid", str(eng.pid), "--interval", "1") as exporter:
        target = f"127.0.0.1:{exporter.port}"
        with PrometheusServer(tmp_path, [target], rule_files=[RULES]) as prom:
            check_ranks_through_promql(prom, target, eng.pid, ranks=2, min_bytes=256 * MIB)
            info = prom.query(f'numatop_llm_engine_info{{instance="{target}"}}')
            assert len(info) == 1
            labels = info[0]["metric"]
            assert labels["tp"] == "2" and labels["pp"] == "1"
            assert labels["model"].endswith("tiny-llama")
            if getattr(eng, "bind", None):
                assert labels["bind"] == eng.bind
            policies = prom.query(f'numatop_llm_rank_info{{instance="{target}"}}')
            assert all(p["metric"]["policy"].startswith("bind:") for p in policies), policies
            check_rules_and_dashboard_evaluate(prom)
        err = exporter.stop()
    assert exporter.proc.returncode == 0, err


def test_prometheus_harness_cleans_up(tmp_path, prometheus):
    """The server the tests start is gone after the block (stopped by PID), its storage in tmp."""
    with PrometheusServer(tmp_path, ["127.0.0.1:9"]) as prom:
        pid = prom.proc.pid
        assert prom.query("vector(1)")[0]["value"][1] == "1"
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
