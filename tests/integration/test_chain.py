"""Specification of the original example's four-stage chain (run_chain.py): pretrain; continue from its checkpoint;
add the digit classifier (`initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]`); drop the decoder,
keeping the trained classifier (the default: skip nothing).

What each stage starts from is read from the weights the trainer held before its first step, and compared with the
previous stage's distributed checkpoint: what is loaded must equal it bit for bit, what is new must not come from it.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from bionemo.example_model.checkpoints import checkpoint_tensor_shapes, is_checkpoint
from support.processes import run
from support.records import checkpoint_model_weights

pytestmark = pytest.mark.slow

TRUNK = ["linear1.bias", "linear1.weight", "linear2.bias", "linear2.weight"]
DECODER = ["linear3.bias", "linear3.weight", "linear4.bias", "linear4.weight"]
HEAD = ["digit_classifier.bias", "digit_classifier.weight"]
STAGES = {  # stage -> (the stage it loads from, the parameters it has)
    "pretrain": (None, TRUNK + DECODER),
    "continue": ("pretrain", TRUNK + DECODER),
    "add_head": ("continue", TRUNK + DECODER + HEAD),
    "drop_decoder": ("add_head", TRUNK + HEAD),
}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, mnist_root) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("chain") / "out"
    result = run([sys.executable, str(Path(__file__).with_name("run_chain.py")), str(mnist_root), str(out)])
    assert result.returncode == 0, result.describe()
    return out, json.loads((out / "chain.json").read_text())


def saved_weights(chain, stage: str) -> dict[str, torch.Tensor]:
    """A stage's final checkpoint, model tensors only, with plain parameter names."""
    return checkpoint_model_weights(Path(chain[1][stage]["checkpoint"]))


def initial_weights(chain, stage: str) -> dict[str, torch.Tensor]:
    return torch.load(chain[0] / f"{stage}-initial.pt")


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_writes_a_distributed_checkpoint_of_exactly_its_model(chain, stage):
    ckpt = Path(chain[1][stage]["checkpoint"])
    assert is_checkpoint(ckpt), ckpt
    assert sorted(checkpoint_tensor_shapes(ckpt)) == sorted(STAGES[stage][1])


@pytest.mark.parametrize("stage", [s for s, (source, _) in STAGES.items() if source])
def test_a_stage_starts_from_exactly_the_loaded_weights_and_a_new_head(chain, stage):
    source = STAGES[stage][0]
    start, loaded = initial_weights(chain, stage), saved_weights(chain, source)
    assert sorted(start) == sorted(STAGES[stage][1])
    new = set(HEAD) if stage == "add_head" else set()
    for name in sorted(set(start) - new):
        assert torch.equal(start[name], loaded[name]), f"{stage} did not start from {source}'s {name}"
    for name in new:
        assert name not in loaded
        assert torch.isfinite(start[name]).all() and start[name].abs().sum() > 0, f"{name} is not initialised"


def test_losses_move_the_way_each_stage_predicts(chain):
    losses = {stage: chain[1][stage]["losses"] for stage in STAGES}
    assert all(len(v) == 10 and all(map(math.isfinite, v)) for v in losses.values()), losses
    # Reconstruction improves, and continuing starts where pretraining got to: the same first batch (same seed)
    # costs less with the pretrained weights than it did with random ones.
    assert losses["pretrain"][-1] < losses["pretrain"][0]
    assert losses["continue"][0] < losses["pretrain"][0]
    # A new 10-way classifier starts near chance (ln(10) = 2.30, plus the reconstruction error) and learns.
    assert losses["add_head"][0] > 1.5, losses["add_head"]
    for stage in ("add_head", "drop_decoder"):
        assert losses[stage][-1] < losses[stage][0], losses[stage]
    # Dropping the decoder keeps the trained head and drops the reconstruction term: the same first batch costs less.
    assert losses["drop_decoder"][0] < losses["add_head"][0], losses
