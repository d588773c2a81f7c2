"""The original example's four-stage chain through the one training routine (run by test_chain.py; not a test).

    python run_chain.py DATA_DIR OUT

1. pretrain: `PretrainConfig()` (autoencoder, reconstruction loss);
2. continue: `PretrainConfig(initial_ckpt_path=<1>)`, the same model from its checkpoint;
3. add the head: `ExampleFineTuneBothConfig(initial_ckpt_path=<2>)` skipping the prefix `digit_classifier`
   (autoencoder from the checkpoint, a new classifier; reconstruction + cross-entropy);
4. drop the decoder: `ExampleFineTuneConfig(initial_ckpt_path=<3>)` with the default (empty) skip list: trunk and
   the trained head from the checkpoint; cross-entropy only.

Each stage trains 10 steps of 128 images on one CPU rank. For each stage the run saves the model's weights as the
trainer had them before its first step (`OUT/<stage>-initial.pt`, plain parameter names) and writes OUT/chain.json:
{stage: {"checkpoint": path, "losses": [reduced train loss of each step]}}.
"""

import json
import sys
from pathlib import Path

import bionemo.example_model  # noqa: F401  (first: installs the torchvision hook before lightning imports it)

# isort: split
import lightning.pytorch as pl

STEPS = 10


class Record(pl.Callback):
    """
    A callback that saves the weights at the start of training and keeps the logged loss of every step. (A module-level
    class: NeMo serialises the trainer's callbacks into each checkpoint's context/, and the next stage reads it.)"""

    def __init__(self, initial_path: Path) -> None:
        super().__init__()
        self.initial_path = initial_path
        self.losses: list[float] = []

    def on_train_start(self, trainer, pl_module):
        import torch

        state = {}
        for key, value in pl_module.state_dict().items():
            while key.startswith("module."):  # NeMo's MegatronParallel and Megatron's DDP wrappers
                key = key.removeprefix("module.")
            if "_extra_state" not in key:
                state[key] = value.detach().clone()
        torch.save(state, self.initial_path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["reduced_train_loss"]))


def main(data_dir: Path, out: Path) -> int:
    from bionemo.example_model.config import ExampleFineTuneBothConfig, ExampleFineTuneConfig, PretrainConfig
    from bionemo.example_model.train import TrainOptions, train

    out.mkdir(parents=True, exist_ok=True)
    stages = {
        "pretrain": lambda ckpt: PretrainConfig(),
        "continue": lambda ckpt: PretrainConfig(initial_ckpt_path=str(ckpt)),
        "add_head": lambda ckpt: ExampleFineTuneBothConfig(
            initial_ckpt_path=str(ckpt), initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]
        ),
        "drop_decoder": lambda ckpt: ExampleFineTuneConfig(initial_ckpt_path=str(ckpt)),
    }
    result, ckpt = {}, None
    for name, config in stages.items():
        record = Record(out / f"{name}-initial.pt")
        opts = TrainOptions(
            max_steps=STEPS,
            accelerator="cpu",
            val_check_interval=STEPS,
            log_every_n_steps=1,
            data_dir=data_dir,
            extra_callbacks=[record],
        )
        ckpt = train(config(ckpt), opts, out / name, name)
        result[name] = {"checkpoint": str(ckpt), "losses": record.losses}
    (out / "chain.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
