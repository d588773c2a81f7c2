"""
Issue 16, seventh measures: `benchmarks/step_runner.py` with megatron-core's full-iteration CUDA graph.

NeMo's `MegatronStep.forward_backward_func` wraps Megatron's forward-backward function in
`megatron.core.full_cuda_graph.FullCudaGraphWrapper` when the model's config has `enable_cuda_graph` and
`cuda_graph_scope == "full_iteration"`: forward, loss and backward (with the gradient finalisation Megatron runs inside
that function) are captured as one CUDA graph at the second step and replayed from the third; the optimizer step,
Lightning's loop and NeMo's logging stay outside (the example's own `train_loss` log, made in `training_step`, is
inside). That route fails before training here: megatron-core 0.15's `TransformerConfig.__post_init__` turns the
deprecated `enable_cuda_graph` into `cuda_graph_impl="local"`, and asserts that the two are not both set when it runs
again, which NeMo's `set_model_parallel_attributes` makes it do. So this sets `cuda_graph_impl="local"` and
`cuda_graph_scope="full_iteration"` on the pretraining config the step runner builds, makes Megatron's RNG tracker
cudagraphable, and makes `MegatronStep.forward_backward_func` the wrapper, as NeMo would; with `GRAPH=0` none of this
is done (the reference run). Both print the reduced training loss of steps 1, 2, 10 and the last but one (`LOSS step N:
value`), to compare. Any error `train()` raises is printed, not raised, so that a run whose final checkpoint save fails
(replacing `PretrainConfig` by a function breaks NeMo's context dump) still reports its step times; a run that failed
mid-training reports only the steps it made, without the LOSS line of the last but one. Same arguments as
step_runner.py; `--accelerator gpu` only.
"""

import functools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "benchmarks"))
import step_runner  # noqa: E402, I001  (first: it clocks start-up, and imports this package before megatron)


def _graph_every_step() -> None:
    from megatron.core.full_cuda_graph import FullCudaGraphWrapper
    from megatron.core.pipeline_parallel.schedules import get_forward_backward_func
    from megatron.core.tensor_parallel.random import initialize_rng_tracker
    from nemo.lightning.megatron_parallel import MegatronStep

    from bionemo.example_model import config

    pretrain_config = config.PretrainConfig

    def graphed_pretrain_config() -> config.PretrainConfig:
        cfg = pretrain_config()
        cfg.cuda_graph_impl = "local"
        cfg.cuda_graph_scope = "full_iteration"
        return cfg

    config.PretrainConfig = graphed_pretrain_config  # step_runner imports it inside run_megatron
    # The wrapper registers the RNG tracker's states with the graph, which takes generators: Megatron's tracker holds
    # them only when made cudagraphable. NeMo's seeding later finds the tracker made and keeps it.
    initialize_rng_tracker(use_cudagraphable_rng=True)
    graphed = functools.cached_property(lambda self: FullCudaGraphWrapper(get_forward_backward_func()))
    graphed.__set_name__(MegatronStep, "forward_backward_func")
    MegatronStep.forward_backward_func = graphed


def _report_losses_and_survive_the_end() -> None:
    import lightning.pytorch as pl

    from bionemo.example_model import train as training

    class Losses(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
            if batch_idx in (1, 2, 10, trainer.max_steps - 2):
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                print(f"LOSS step {batch_idx}: {float(loss)!r}", flush=True)
            if batch_idx == trainer.max_steps - 2:  # whether the graph ran: Megatron logs its capture only at INFO
                from megatron.core.full_cuda_graph import FullCudaGraphWrapper

                captured = FullCudaGraphWrapper.cuda_graph["training"] is not None
                calls = FullCudaGraphWrapper.curr_iteration
                print(f"GRAPH captured {captured}, calls {calls}", flush=True)

    run = training.train

    def train(config, opts, *args, **kwargs):
        opts.extra_callbacks.append(Losses())
        try:
            return run(config, opts, *args, **kwargs)
        except Exception as error:  # noqa: BLE001  (the step times are what this measures)
            print(f"train() raised: {type(error).__name__}: {error}", flush=True)

    training.train = train


if __name__ == "__main__":  # not in the processes multiprocessing spawns, which import this as __mp_main__
    if os.environ.get("GRAPH", "1") == "1":
        _graph_every_step()
    _report_losses_and_survive_the_end()
    sys.exit(step_runner.main(sys.argv[1:]))
