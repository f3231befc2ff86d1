"""Two-process DDP training on CPU (gloo): both processes train, only the primary one logs to
MLflow and registers the model. Slow: two Python processes each import the training stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

# Lightning's DDP launcher starts the second process by running this same script again, with
# LOCAL_RANK=1 in its environment; each process reports what it saw.
SCRIPT = """
import json, os, sys
import torch.distributed as dist
from pipelines.settings import parse_config
from pipelines.sources import load_panel
from pipelines.train import train

config = parse_config(json.loads(sys.argv[1]))
result = train(config, load_panel(config.data), run_name="ddp")
rank = os.environ.get("LOCAL_RANK", "0")
world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
report = {"rank": rank, "world": world, "logged": result is not None,
          "run_id": result.run_id if result else None, "version": result.registered_version if result else None}
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as fh:
    json.dump(report, fh)
"""


@pytest.mark.slow
def test_two_process_ddp_on_cpu_logs_once(tmp_path: Path):
    config = {
        "data": {"synthetic": {"num_clusters": 4, "days": 14, "seed": 4}},
        "horizon": 12,
        "model": {"context_length": 24, "hidden_size": 16, "num_layers": 1},
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "num_threads": 1, "batch_size": 16,
                    "batches_per_epoch": 6, "max_epochs": 2, "patience": 0, "progress_bar": False},
        "mlflow": {"experiment": "test-ddp", "register_as": "ddp-test-dpe"},
        "output_dir": str(tmp_path / "out"),
        "num_samples": 10,
        "fan_chart_clusters": 0,
    }
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script), json.dumps(config), str(tmp_path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert result.returncode == 0, result.stderr[-4000:]
    reports = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")}
    assert sorted(reports) == ["rank0.json", "rank1.json"], result.stderr[-4000:]
    assert reports["rank0.json"]["world"] == reports["rank1.json"]["world"] == 2
    assert reports["rank0.json"]["logged"] and not reports["rank1.json"]["logged"]

    experiment = mlflow.MlflowClient().get_experiment_by_name("test-ddp")
    runs = mlflow.MlflowClient().search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [reports["rank0.json"]["run_id"]]  # one run, the primary's
    assert runs[0].info.status == "FINISHED" and "val_mean_wql" in runs[0].data.metrics
    versions = mlflow.MlflowClient().search_model_versions("name = 'ddp-test-dpe'")
    assert [str(v.version) for v in versions] == [reports["rank0.json"]["version"]]
