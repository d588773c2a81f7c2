"""
Checkpoints: the callback that writes NeMo2 distributed checkpoints (a .nemo-like directory: `weights/` holding
Megatron's distributed checkpoint, `context/` holding the serialised trainer/model config), and the checks that turn
a bad `initial_ckpt_path` into one clear error instead of a stack trace from deep inside Megatron.
"""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from bionemo.example_model.errors import ExampleModelError

if TYPE_CHECKING:
    from torch import nn

__all__: Sequence[str] = (
    "CheckpointError",
    "check_checkpoint_fits",
    "check_initial_checkpoint",
    "check_resumable",
    "check_is_checkpoint",
    "checkpoint_tensor_shapes",
    "final_checkpoint",
    "is_checkpoint",
    "last_whole_checkpoint",
    "make_checkpoint_callback",
)


class CheckpointError(ExampleModelError, ValueError):
    """A checkpoint path that does not exist, is not a checkpoint, or does not fit the model."""


def make_checkpoint_callback(every_n_train_steps: int, save_top_k: int = 1):
    """
    NeMo's ModelCheckpoint as resume needs it.

    `save_optim_on_train_end=True`: otherwise the final `-last` checkpoint has no optimizer state and resuming from it
    restarts Adam. The reduced training loss is deliberately not in the file name (it is in the logs): a name must be
    identical on every rank, or ranks write their shards into different directories.
    """
    from nemo.lightning.pytorch.callbacks import ModelCheckpoint

    return ModelCheckpoint(
        monitor="val_loss",
        save_last=True,
        save_top_k=save_top_k,
        every_n_train_steps=every_n_train_steps,
        save_optim_on_train_end=True,
        always_save_context=True,
        filename="{epoch}-{step}-{consumed_samples}",
    )


def is_checkpoint(path: Path) -> bool:
    """A NeMo2 checkpoint directory: Megatron's `weights/metadata.json` plus the `context/` NeMo restores from."""
    return (path / "weights" / "metadata.json").is_file() and (path / "context").is_dir()


def last_whole_checkpoint(checkpoints: Path) -> Path | None:
    """The `-last` checkpoint NeMo's AutoResume resumes from: the newest whole one under a run's `checkpoints/`."""
    last = [p for p in checkpoints.glob("*-last") if p.is_dir() and is_checkpoint(p)] if checkpoints.is_dir() else []
    return max(last, key=lambda p: p.stat().st_mtime, default=None)


def final_checkpoint(checkpoints: Path) -> Path:
    """
    The newest `-last` checkpoint of a run that just finished, on any rank. Not checked for wholeness: rank 0 writes
    its context/ after the other ranks have left the save, so they may look before it is there."""
    last = sorted((p for p in checkpoints.glob("*-last") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not last:
        raise CheckpointError(f"training finished but wrote no checkpoint under {checkpoints}")
    return last[-1]


def checkpoint_tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Model tensor names (without NeMo's `module.` prefix) and their global shapes, read from the metadata only."""
    from megatron.core import dist_checkpointing

    metadata = dist_checkpointing.load_tensors_metadata(str(Path(path) / "weights"))
    return {
        key.removeprefix("module."): tuple(t.global_shape)
        for key, t in metadata.items()
        if key.startswith("module.") and hasattr(t, "global_shape")
    }


def _not_a_checkpoint(path: Path, what: str) -> CheckpointError:
    found = sorted({p.parent.parent for p in path.glob("**/weights/metadata.json")}, key=lambda p: p.stat().st_mtime)
    hint = f" Latest checkpoints below it: {', '.join(map(str, found[-3:]))}." if found else ""
    return CheckpointError(
        f"{what} {path} is not a NeMo2 checkpoint (it has no weights/metadata.json and context/). Pass the checkpoint "
        f"directory a training stage printed.{hint}"
    )


def check_is_checkpoint(path: str | Path, what: str = "initial checkpoint") -> None:
    """
    Raise `CheckpointError` unless `path` is a NeMo2 checkpoint directory whose context NeMo can read back. `what`
    names where the path came from (a config's initial checkpoint, a command-line flag) in the message."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"{what} {path} does not exist. Pass the checkpoint directory a training stage printed "
            "(it contains weights/ and context/)."
        )
    if not is_checkpoint(path):
        raise _not_a_checkpoint(path, what)
    try:
        json.loads((path / "context" / "io.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} has no readable context/io.json ({type(e).__name__}), which holds the model's "
            "settings: NeMo could not serialise the run when it saved it (its log then says 'Failed to dump training "
            "context', e.g. for a callback class defined inside a function). Train that stage again with "
            "module-level callbacks."
        ) from e


def check_checkpoint_fits(model: "nn.Module", path: str | Path, skip_prefixes: Sequence[str]) -> None:
    """
    Raise `CheckpointError` unless every weight of `model` outside `skip_prefixes` is in the checkpoint with the
    same shape, and every skip prefix matches at least one weight (a typo would silently load nothing new)."""
    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if "_extra_state" not in k}
    unmatched = [p for p in skip_prefixes if not any(k.startswith(p) for k in model_shapes)]
    if unmatched:
        raise CheckpointError(
            f"skip prefix(es) {unmatched} match no weight of {type(model).__name__} (its weights: "
            f"{sorted(model_shapes)}). Fix the spelling or remove them from "
            "initial_ckpt_skip_keys_with_these_prefixes."
        )
    ckpt_shapes = checkpoint_tensor_shapes(path)
    wanted = {k: s for k, s in model_shapes.items() if not any(k.startswith(p) for p in skip_prefixes)}
    missing = sorted(k for k in wanted if k not in ckpt_shapes)
    mismatched = sorted(
        f"{k} {ckpt_shapes[k]} vs {s}" for k, s in wanted.items() if k in ckpt_shapes and ckpt_shapes[k] != s
    )
    if missing or mismatched:
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(model).__name__}: "
            + (f"missing {missing}; " if missing else "")
            + (f"shape (checkpoint vs model) {mismatched}; " if mismatched else "")
            + "pick a checkpoint of a compatible model, or list the new layers' prefixes in "
            "initial_ckpt_skip_keys_with_these_prefixes."
        )


def check_initial_checkpoint(model: "nn.Module", path: str | Path, skip_prefixes: Sequence[str]) -> None:
    """Both checks: `path` is a checkpoint, and it fits `model` outside `skip_prefixes`."""
    check_is_checkpoint(path)
    check_checkpoint_fits(model, path, skip_prefixes)


def check_resumable(run_dir: Path, use_distributed_optimizer: bool) -> None:
    """
    Refuse, before anything is loaded or written, to resume `run_dir`'s last checkpoint with the other kind of
    optimizer.

    Megatron's distributed optimizer and its plain one save Adam's state under different keys and layouts; loading
    one's checkpoint with the other fails deep inside the load (`KeyError: 'optimizer.state.exp_avg...'` or
    `KeyError: 'pre_wd_mult'`). A distributed-optimizer run may resume on another number of ranks: its fully
    reshardable checkpoint holds Adam's state per parameter.
    """
    from megatron.core import dist_checkpointing

    ckpt = last_whole_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        return
    metadata = dist_checkpointing.load_content_metadata(str(ckpt / "weights")) or {}
    saved_distributed = "distrib_optim_sharding_type" in metadata
    if saved_distributed != use_distributed_optimizer:
        saved, asked = ("with", "without") if saved_distributed else ("without", "with")
        raise ExampleModelError(
            f"{ckpt} was saved {saved} --use-distributed-optimizer and cannot be resumed {asked} it: run again "
            f"{saved} --use-distributed-optimizer, or use a new --out"
        )
