"""Specification of `--num-nodes`: a pipeline over two "nodes" computes what the same ranks compute on one node.

Two `torchrun --nnodes 2 --node-rank {0,1} --nproc-per-node 1` processes on this machine (one gloo rank each,
rendezvous at 127.0.0.1) run `bionemo-mnist pipeline --devices 1 --num-nodes 2`: Lightning finds torchrun's
environment (TorchElasticEnvironment) and starts no processes of its own. The reference is the one-node
`--devices 2` pipeline of the session fixture `pipeline_2rank` (Lightning's own launcher), same settings: 2 ranks x
64 images per step, logging every step. The same two ranks see the same data shards and all-reduce the same
numbers, so losses and weights are expected to be equal, bit for bit (tolerance: none). One setting makes that so:
Lightning's launcher gives each of its processes cpu_count / processes intra-op threads (`_SubprocessScriptLauncher`,
through OMP_NUM_THREADS); a torchrun'd process, which Lightning does not launch, keeps torch's default of every core,
and a matmul over a different number of threads sums in a different order (1-ulp loss differences from step 2 on).
Both "nodes" share this machine, as the one node's two ranks do, so they get the same share.
"""

import sys
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.distributed import _suggested_max_num_threads

from support import free_port
from support.cli_args import RUN_STAGE, pipeline_args
from support.processes import Run, assert_one_line_error, bionemo_mnist, run, run_together
from support.records import checkpoint_model_weights, metric_by_step, printed_checkpoint, read_csv_rows

NUM_TEST_IMAGES = 10_000
STAGES = ("pretrain", "finetune")


def torchrun_node(node_rank: int, port: int, args: list[str]) -> list[str]:
    """One node of two, one rank on it, the rendezvous on this machine: what README's recipe runs on each machine."""
    return [
        *(sys.executable, "-m", "torch.distributed.run"),  # `torchrun`, of this interpreter
        *("--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", "1"),
        *("--master-addr", "127.0.0.1", "--master-port", str(port)),
        *(str(RUN_STAGE), "cli", *args),
    ]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, mnist_root) -> tuple[Path, list[Run]]:
    out = tmp_path_factory.mktemp("pipeline-2node") / "out"
    port = free_port()
    args = [*pipeline_args(out, mnist_root, devices=1), "--num-nodes", "2"]
    env = {"BIONEMO_TEST_LOG_EVERY_N_STEPS": "1", "OMP_NUM_THREADS": str(_suggested_max_num_threads(2))}
    runs = run_together([torchrun_node(r, port, args) for r in (0, 1)], env=env)
    for node in runs:
        assert node.returncode == 0, node.describe()
    return out, runs


def two_node_test(fn):
    """A test that reads the two-node run (slow, several processes)."""
    return pytest.mark.slow(pytest.mark.multirank(fn))


@two_node_test
def test_each_node_ran_one_rank_of_a_two_rank_world_under_torchrun(two_nodes):
    # NeMo names each process's log after its global and local rank: node 1's only rank is global 1, local 0.
    out, _ = two_nodes
    for stage in STAGES:
        logs = sorted(p.name for p in (out / stage).glob("**/nemo_log_globalrank-*_localrank-*.txt"))
        assert logs == ["nemo_log_globalrank-0_localrank-0.txt", "nemo_log_globalrank-1_localrank-0.txt"], logs


@two_node_test
def test_only_node_0_reports_the_checkpoints(two_nodes):
    out, (node0, node1) = two_nodes
    for stage in STAGES:
        assert printed_checkpoint(node0.stdout, stage).is_relative_to(out / stage)
        assert f"{stage} checkpoint:" not in node1.stdout, node1.describe()


@two_node_test
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("metric", ["reduced_train_loss", "val_loss"])
def test_two_nodes_log_the_same_loss_at_every_step_as_two_ranks_on_one_node(two_nodes, pipeline_2rank, stage, metric):
    assert pipeline_2rank.run.returncode == 0, pipeline_2rank.run.describe()
    out, _ = two_nodes
    losses = metric_by_step(out / stage / "csv" / "metrics.csv", metric)
    expected = metric_by_step(pipeline_2rank.out / stage / "csv" / "metrics.csv", metric)
    assert expected and losses == expected


@two_node_test
@pytest.mark.parametrize("stage", STAGES)
def test_two_nodes_end_with_the_same_weights_as_two_ranks_on_one_node(two_nodes, pipeline_2rank, stage):
    out, (node0, _) = two_nodes
    weights = checkpoint_model_weights(printed_checkpoint(node0.stdout, stage))
    expected = checkpoint_model_weights(printed_checkpoint(pipeline_2rank.run.stdout, stage))
    assert weights.keys() == expected.keys() and weights
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), f"{name}: max |diff| {(weights[name] - tensor).abs().max()}"


@two_node_test
def test_two_nodes_predict_every_test_image_once_as_two_ranks_on_one_node_do(two_nodes, pipeline_2rank):
    out, _ = two_nodes
    rows = read_csv_rows(out / "predict" / "predictions.csv")
    assert [int(r["idx"]) for r in rows] == list(range(NUM_TEST_IMAGES))
    assert rows == read_csv_rows(pipeline_2rank.out / "predict" / "predictions.csv")


def test_num_nodes_2_without_a_launcher_is_one_error_line(tmp_path):
    args = ["pretrain", "--accelerator", "cpu", "--num-nodes", "2", "--steps", "1", "--out", str(tmp_path / "out")]
    assert_one_line_error(run([*bionemo_mnist(), *args]), "--num-nodes 2", "torchrun --nnodes 2", "srun")
    assert not (tmp_path / "out").exists()
