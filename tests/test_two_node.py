"""Two simulated Ray nodes (ray.cluster_utils.Cluster, one CPU each): `lth run --address`
places the trials of a stage on both nodes, and every unit's marker records its node."""

from __future__ import annotations

import json

import pytest
import ray
from click.testing import CliRunner
from ray.cluster_utils import Cluster

from orchestrator.cli import main

CAMPAIGN = """
name: twonode
data: {dataset: digits}
model: {arch: mlp, options: {widths: [16]}}
train: {lr: 0.05, epochs: 1, batch_size: 256, schedule: constant}
prune: {rate: 0.5, levels: 1}
seeds: [0, 1]
reset: rewind
resources: {cpus_per_trial: 1}
max_failures: 0
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_trials_land_on_both_nodes(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(node_ids) == 2
        spec = tmp_path / "c.yaml"
        spec.write_text(CAMPAIGN)
        store = tmp_path / "store"
        out = CliRunner().invoke(main, ["run", str(spec), "--store", str(store), "--address", cluster.address])
        assert out.exit_code == 0, out.output
        markers = [json.loads(p.read_text()) for p in (store / "_units" / "campaign=twonode").glob("*.json")]
        assert len(markers) == 4 and all(m["status"] == "done" for m in markers)  # 2 dense + 2 trajectories
        assert {m["node"] for m in markers} == node_ids
    finally:
        ray.shutdown()
        cluster.shutdown()
