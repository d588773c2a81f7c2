"""Specification of `bionemo.example_model.losses`: what each stage optimises and how losses are aggregated.

The reference everywhere is the loss of the whole batch computed directly with `torch.nn.functional`: whatever the
split into microbatches and data-parallel ranks, `reduce()` must report exactly that number.
"""

import contextlib
import json
import multiprocessing
import os
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bionemo.example_model.data import PAD_IDX
from bionemo.example_model.losses import (
    ClassifierLossReduction,
    CountsReducedSamples,
    KeepsItsLoss,
    MicrobatchLoss,
    MSELossReduction,
    MSEPlusClassifierLossReduction,
)
from support import drop_stale_megatron_groups, free_port

REDUCTIONS = [MSELossReduction, ClassifierLossReduction, MSEPlusClassifierLossReduction]
REL_TOL = 1e-6


# --------------------------------------------------------------------------------------------------------------------
# Helpers: random batches and forward outputs shaped like MnistItem and the model output TypedDicts.


def make_batch(size: int, seed: int, first_idx: int = 0) -> dict[str, torch.Tensor]:
    """An MnistItem batch: data [B,1,28,28] in [0,1], label int64 [B], idx int64 [B]."""
    g = torch.Generator().manual_seed(seed)
    return {
        "data": torch.rand(size, 1, 28, 28, generator=g),
        "label": torch.randint(0, 10, (size,), generator=g, dtype=torch.int64),
        "idx": torch.arange(first_idx, first_idx + size, dtype=torch.int64),
    }


def make_output(size: int, seed: int) -> dict[str, torch.Tensor]:
    """Every key any model returns: x_hat [B,784], z [B,3], digit_logits [B,10]."""
    g = torch.Generator().manual_seed(seed + 1_000_003)
    return {
        "x_hat": torch.rand(size, 784, generator=g) * 1.5 - 0.25,
        "z": torch.randn(size, 3, generator=g),
        "digit_logits": torch.randn(size, 10, generator=g) * 3,
    }


def output_for(reduction_cls: type, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the keys the matching model returns (the classifier-only model has no decoder, hence no x_hat)."""
    keys = {
        MSELossReduction: ("x_hat", "z"),
        ClassifierLossReduction: ("z", "digit_logits"),
        MSEPlusClassifierLossReduction: ("x_hat", "z", "digit_logits"),
    }[reduction_cls]
    return {k: out[k] for k in keys}


def direct_loss(reduction_cls: type, batch: dict, out: dict) -> torch.Tensor:
    """The batch loss written directly with torch.nn.functional (fp32, 'mean' reduction)."""
    mse = lambda: F.mse_loss(out["x_hat"], batch["data"].flatten(start_dim=1))  # noqa: E731
    ce = lambda: F.cross_entropy(out["digit_logits"], batch["label"])  # noqa: E731
    if reduction_cls is MSELossReduction:
        return mse()
    if reduction_cls is ClassifierLossReduction:
        return ce()
    return mse() + ce()


def split(tensors: dict[str, torch.Tensor], sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    parts = {k: torch.split(v, sizes) for k, v in tensors.items()}
    return [{k: parts[k][i] for k in tensors} for i in range(len(sizes))]


def records(reduction, batch: dict, out: dict, sizes: list[int]) -> list[MicrobatchLoss]:
    return [reduction.forward(b, o)[1] for b, o in zip(split(batch, sizes), split(out, sizes))]


def assert_rel_close(actual: torch.Tensor | float, expected: torch.Tensor | float, rel: float = REL_TOL) -> None:
    actual, expected = float(actual), float(expected)
    assert abs(actual - expected) <= rel * abs(expected), f"{actual!r} != {expected!r} (rel tol {rel})"


@pytest.fixture(autouse=True)
def _single_process():
    """These tests (the multi-rank ones too, in their parent) run with no process group in this process."""
    assert not (dist.is_available() and dist.is_initialized()), "a previous test leaked a torch.distributed group"


microbatch_sizes = st.lists(st.integers(min_value=1, max_value=24), min_size=1, max_size=6)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


# --------------------------------------------------------------------------------------------------------------------
# Microbatch aggregation


@pytest.mark.parametrize("reduction_cls", REDUCTIONS, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(sizes=microbatch_sizes, seed=seeds)
@example(sizes=[16, 16, 5], seed=0)  # the usual case: equal microbatches and a smaller last one
@example(sizes=[1], seed=1)
@example(sizes=[1, 23], seed=2)
def test_reduce_over_any_microbatch_split_equals_the_whole_batch_loss(reduction_cls, sizes, seed):
    size = sum(sizes)
    batch, out = make_batch(size, seed), output_for(reduction_cls, make_output(size, seed))
    reduced = reduction_cls().reduce(records(reduction_cls(), batch, out, sizes))
    assert reduced.dtype == torch.float32
    assert reduced.shape == ()
    assert_rel_close(reduced, direct_loss(reduction_cls, batch, out))


@pytest.mark.parametrize("reduction_cls", REDUCTIONS, ids=lambda c: c.__name__)
def test_reduce_weighs_microbatches_by_size_not_equally(reduction_cls):
    """A mean of the microbatch means would be wrong for unequal microbatches; this split makes the gap large."""
    sizes = [30, 1]
    batch, out = make_batch(31, seed=7), output_for(reduction_cls, make_output(31, seed=7))
    out = {k: v.clone() for k, v in out.items()}
    if "x_hat" in out:
        out["x_hat"][-1] += 5.0  # the lone last sample has a far larger loss than the rest
    if "digit_logits" in out:
        out["digit_logits"][-1] = -20.0 * F.one_hot(batch["label"][-1], 10)
    recs = records(reduction_cls(), batch, out, sizes)
    mean_of_means = torch.stack([r["avg"] for r in recs]).mean()
    expected = direct_loss(reduction_cls, batch, out)
    assert abs(float(mean_of_means) - float(expected)) > 0.1 * float(expected)
    assert_rel_close(reduction_cls().reduce(recs), expected)


@pytest.mark.parametrize("reduction_cls", REDUCTIONS, ids=lambda c: c.__name__)
def test_each_record_holds_its_microbatch_mean_and_sample_count(reduction_cls):
    batch, out = make_batch(9, seed=3), output_for(reduction_cls, make_output(9, seed=3))
    loss, record = reduction_cls().forward(batch, out)
    assert set(record) == {"avg", "num_samples"}
    assert float(record["num_samples"]) == 9
    assert_rel_close(record["avg"], direct_loss(reduction_cls, batch, out))
    assert torch.equal(record["avg"], loss.detach())
    assert not record["avg"].requires_grad and not record["num_samples"].requires_grad


@pytest.mark.parametrize("reduction_cls", REDUCTIONS, ids=lambda c: c.__name__)
def test_reduce_of_no_microbatches_raises_value_error(reduction_cls):
    with pytest.raises(ValueError, match="at least one microbatch"):
        reduction_cls().reduce([])


# --------------------------------------------------------------------------------------------------------------------
# Evaluation padding (idx == PAD_IDX)


def with_padding(batch: dict, out: dict, positions: list[int], seed: int) -> tuple[dict, dict]:
    """`batch`/`out` with padding rows (`PAD_IDX`; arbitrary finite pixels, labels, outputs) at `positions`."""
    n_pad = len(positions)
    pad_batch, pad_out = make_batch(n_pad, seed + 17), make_output(n_pad, seed + 17)
    pad_batch["idx"] = torch.full((n_pad,), PAD_IDX, dtype=torch.int64)
    pad_out = {k: v * 100 for k, v in pad_out.items()}  # large losses: any weight on them would show
    rows_b = {k: list(v) for k, v in batch.items()}
    rows_o = {k: list(v) for k, v in out.items()}
    for j, pos in enumerate(sorted(positions)):
        for k in rows_b:
            rows_b[k].insert(pos + j, pad_batch[k][j])
        for k in rows_o:
            rows_o[k].insert(pos + j, pad_out[k][j])
    return {k: torch.stack(v) for k, v in rows_b.items()}, {k: torch.stack(v) for k, v in rows_o.items()}


@pytest.mark.parametrize("reduction_cls", REDUCTIONS, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data(), seed=seeds)
def test_padding_items_get_zero_weight(reduction_cls, data, seed):
    sizes = data.draw(microbatch_sizes, label="sizes")
    size = sum(sizes)
    batch, out = make_batch(size, seed), output_for(reduction_cls, make_output(size, seed))
    reduction = reduction_cls()
    clean = reduction.reduce(records(reduction, batch, out, sizes))

    target = data.draw(st.integers(0, len(sizes) - 1), label="padded microbatch")
    n_pad = data.draw(st.integers(1, 8), label="pad rows")
    positions = data.draw(st.lists(st.integers(0, sizes[target]), min_size=n_pad, max_size=n_pad), label="pos")
    parts_b, parts_o = split(batch, sizes), split(out, sizes)
    parts_b[target], parts_o[target] = with_padding(parts_b[target], parts_o[target], positions, seed)
    padded_records = [reduction.forward(b, o)[1] for b, o in zip(parts_b, parts_o)]

    assert float(padded_records[target]["num_samples"]) == sizes[target]
    assert_rel_close(reduction.reduce(padded_records), clean)


@pytest.mark.parametrize("reduction_cls", REDUCTIONS, ids=lambda c: c.__name__)
def test_a_microbatch_of_only_padding_changes_nothing(reduction_cls):
    batch, out = make_batch(10, seed=5), output_for(reduction_cls, make_output(10, seed=5))
    pad_batch, pad_out = make_batch(4, seed=6), output_for(reduction_cls, make_output(4, seed=6))
    pad_batch["idx"][:] = PAD_IDX
    reduction = reduction_cls()
    loss, record = reduction.forward(pad_batch, pad_out)
    assert float(record["num_samples"]) == 0
    assert torch.isfinite(loss) and float(loss) == 0.0  # nothing to learn from, and no NaN to back-propagate
    clean = reduction.reduce(records(reduction, batch, out, [6, 4]))
    assert_rel_close(reduction.reduce([*records(reduction, batch, out, [6, 4]), record]), clean)


@pytest.mark.parametrize("reduction_cls", REDUCTIONS, ids=lambda c: c.__name__)
def test_reduce_counts_the_real_samples_its_mean_is_over_for_the_logged_validation_weight(reduction_cls):
    batch, out = make_batch(10, seed=8), output_for(reduction_cls, make_output(10, seed=8))
    batch["idx"][7:] = PAD_IDX  # the last 3 are evaluation padding
    reduction = reduction_cls()
    assert isinstance(reduction, CountsReducedSamples)
    reduction.reduce(records(reduction, batch, out, [4, 6]))
    assert float(reduction.reduced_num_samples) == 7
    reduction.reduce([{"avg": torch.tensor(1.0)}])  # the original's records carry no count
    assert reduction.reduced_num_samples is None


# --------------------------------------------------------------------------------------------------------------------
# What Megatron back-propagates


@pytest.mark.parametrize("reduction_cls", REDUCTIONS, ids=lambda c: c.__name__)
@settings(max_examples=20, deadline=None)
@given(size=st.integers(1, 40), seed=seeds)
def test_backpropagated_loss_is_the_microbatch_mean_with_its_gradient(reduction_cls, size, seed):
    batch = make_batch(size, seed)
    out = output_for(reduction_cls, make_output(size, seed))
    leaves = {k: v.clone().requires_grad_(True) for k, v in out.items()}
    ref_leaves = {k: v.clone().requires_grad_(True) for k, v in out.items()}

    loss, _ = reduction_cls().forward(batch, leaves)
    expected = direct_loss(reduction_cls, batch, ref_leaves)
    assert loss.shape == ()
    assert_rel_close(loss, expected)

    loss.backward()
    expected.backward()
    for key in ("x_hat", "digit_logits"):
        if key in out:
            torch.testing.assert_close(leaves[key].grad, ref_leaves[key].grad, rtol=1e-5, atol=1e-9)
    assert leaves["z"].grad is None  # the latent code is not part of any loss (it reaches it only through the model)


# --------------------------------------------------------------------------------------------------------------------
# A result kept for the next call (the module's training_step computes the loss NeMo's call then asks for)


def kept_call(reduction_cls: type, bare_logits: bool = False):
    """
    A reduction set up for a batch, called on an output, its result kept: (reduction, batch, output, result). With
    `bare_logits`, the output is the logits tensor itself, as the classifier-only model returns it."""
    batch, out = make_batch(6, seed=11), output_for(reduction_cls, make_output(6, seed=11))
    if bare_logits:
        out = out["digit_logits"]
    reduction = reduction_cls()
    reduction.setup(batch)
    result = reduction(out)
    reduction.keep_for_the_next_call(out, result)
    return reduction, batch, out, result


KEPT_CASES = [
    *[pytest.param(cls, False, id=cls.__name__) for cls in REDUCTIONS],
    pytest.param(ClassifierLossReduction, True, id="ClassifierLossReduction-bare-logits"),
]


def tensors_of(out) -> list[torch.Tensor]:
    return list(out.values()) if isinstance(out, dict) else [out]


@pytest.mark.parametrize(("reduction_cls", "bare_logits"), KEPT_CASES)
def test_a_kept_result_is_returned_once_for_the_same_batch_and_output(reduction_cls, bare_logits):
    reduction, _, out, result = kept_call(reduction_cls, bare_logits)
    assert isinstance(reduction, KeepsItsLoss)
    assert reduction(out) is result
    again = reduction(out)
    assert again is not result and torch.equal(again[0], result[0])


# Each change: (batch, output) -> (the batch and output of the next call, the mode it runs in).


def _another_equal_output(batch, out):
    return batch, (dict(out) if isinstance(out, dict) else out.clone()), contextlib.nullcontext()


def _each_output_tensor_changed_in_place(batch, out):
    for tensor in tensors_of(out):
        tensor.mul_(0.5)
    return batch, out, contextlib.nullcontext()


def _another_tensor_in_the_output(batch, out):
    for key in out:
        out[key] = out[key].clone()  # equal values, and version 0 like the one it replaces
    return batch, out, contextlib.nullcontext()


def _batch_changed_in_place(batch, out):
    batch["idx"][0] = PAD_IDX
    return batch, out, contextlib.nullcontext()


def _another_batch(batch, out):
    return dict(batch), out, contextlib.nullcontext()


def _another_grad_mode(batch, out):
    return batch, out, torch.no_grad()


def _under_autocast(batch, out):
    return batch, out, torch.autocast("cpu", dtype=torch.bfloat16)


CHANGES = [
    _another_equal_output,
    _each_output_tensor_changed_in_place,
    _another_tensor_in_the_output,
    _batch_changed_in_place,
    _another_batch,
    _another_grad_mode,
    _under_autocast,
]


@pytest.mark.parametrize(
    ("reduction_cls", "bare_logits", "change"),
    [
        pytest.param(*case.values, change, id=f"{case.id}-{change.__name__.strip('_')}")
        for case in KEPT_CASES
        for change in CHANGES
        if not (case.values[1] and change is _another_tensor_in_the_output)  # a bare tensor has no place for one
    ],
)
def test_a_kept_result_is_computed_again_for_any_other_call(reduction_cls, bare_logits, change):
    reduction, batch, out, result = kept_call(reduction_cls, bare_logits)
    batch, out, mode = change(batch, out)
    reduction.setup(batch)
    with mode:
        answer = reduction(out)
        fresh = reduction_cls()
        fresh.setup(batch)
        expected = fresh(out)
    assert answer is not result
    assert torch.equal(answer[0], expected[0]) and torch.equal(answer[1]["avg"], expected[1]["avg"])


# --------------------------------------------------------------------------------------------------------------------
# Data-parallel ranks: two real gloo processes

WORLD = 2
# A global batch of 29 samples: rank 0 holds 20 of them in microbatches [8, 8, 4], rank 1 the other 9 in [5, 4].
RANK_MICROBATCHES = {0: [8, 8, 4], 1: [5, 4]}


def _rank_worker(rank, port, reduction_cls, batch, out, mode, result_dir):
    """One data-parallel rank: reduce its own microbatches, write the value and its pid to result_dir/rank<N>.json."""
    result = {"rank": rank, "pid": os.getpid()}
    try:
        # As in DataLoader workers: OpenMP's thread pool does not survive fork, so a forked child must not use it.
        torch.set_num_threads(1)
        from bionemo.example_model import bridges

        bridges.install("cpu")
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        from megatron.core import parallel_state

        if mode == "megatron_dp":
            parallel_state.initialize_model_parallel(1, 1)
            result["dp_world_size"] = parallel_state.get_data_parallel_world_size()
        elif mode == "megatron_tp":
            parallel_state.initialize_model_parallel(2, 1)
            result["dp_world_size"] = parallel_state.get_data_parallel_world_size()
        result["model_parallel_initialized"] = parallel_state.model_parallel_is_initialized()

        sizes = RANK_MICROBATCHES[rank]
        start = sum(sum(RANK_MICROBATCHES[r]) for r in range(rank))
        mine = slice(start, start + sum(sizes))
        local_batch = {k: v[mine] for k, v in batch.items()}
        local_out = {k: v[mine] for k, v in out.items()}
        reduction = reduction_cls()
        result["loss"] = float(reduction.reduce(records(reduction, local_batch, local_out, sizes)))
        result["local_direct_loss"] = float(direct_loss(reduction_cls, local_batch, local_out))
        if mode != "world":
            parallel_state.destroy_model_parallel()
        dist.destroy_process_group()
    except BaseException:
        result["error"] = traceback.format_exc()
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(result))


def run_two_ranks(reduction_cls, batch, out, mode, tmp_path) -> list[dict]:
    """Fork two processes that join one gloo group; return their result records in rank order."""
    from megatron.core import parallel_state

    # A forked rank must not inherit Megatron's state: a leaked one, or the groups destroy_model_parallel() leaves.
    assert not parallel_state.model_parallel_is_initialized(), "a previous test leaked Megatron's parallel state"
    drop_stale_megatron_groups()
    ctx = multiprocessing.get_context("fork")  # forked workers reuse this process's imports (NeMo takes ~13 s)
    port = free_port()
    procs = [
        ctx.Process(target=_rank_worker, args=(rank, port, reduction_cls, batch, out, mode, str(tmp_path)))
        for rank in range(WORLD)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert [p.exitcode for p in procs] == [0] * WORLD, "a rank crashed or hung"
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    for r in results:
        assert "error" not in r, f"rank {r['rank']} failed:\n{r['error']}"
    assert len({r["pid"] for r in results} | {os.getpid()}) == WORLD + 1, "the ranks must be distinct processes"
    return results


def global_batch(reduction_cls, seed: int = 11) -> tuple[dict, dict]:
    size = sum(sum(s) for s in RANK_MICROBATCHES.values())
    return make_batch(size, seed), output_for(reduction_cls, make_output(size, seed))


@pytest.mark.multirank
@pytest.mark.parametrize("mode", ["world", "megatron_dp"])
@pytest.mark.parametrize("reduction_cls", REDUCTIONS, ids=lambda c: c.__name__)
def test_ranks_with_unequal_shares_all_report_the_global_batch_loss(reduction_cls, mode, tmp_path):
    """`world`: torch.distributed only, reduced over the WORLD group; `megatron_dp`: Megatron's data-parallel group."""
    batch, out = global_batch(reduction_cls)
    results = run_two_ranks(reduction_cls, batch, out, mode, tmp_path)

    expected = direct_loss(reduction_cls, batch, out)
    assert results[0]["loss"] == results[1]["loss"], "ranks disagree on the logged loss"
    for r in results:
        assert_rel_close(r["loss"], expected)
        assert r["model_parallel_initialized"] == (mode == "megatron_dp")
        if mode == "megatron_dp":
            assert r["dp_world_size"] == WORLD
    # Each rank alone sees a different loss, so agreeing on the global one really needed the all-reduce.
    assert results[0]["local_direct_loss"] != results[1]["local_direct_loss"]


@pytest.mark.multirank
def test_tensor_parallel_peers_are_not_reduced_together(tmp_path):
    """With tensor parallelism 2 on 2 ranks there is one data-parallel rank: reduce() must not all-reduce over
    WORLD (the two ranks are model-parallel peers), so each returns the loss of its own microbatches."""
    batch, out = global_batch(MSELossReduction)
    results = run_two_ranks(MSELossReduction, batch, out, "megatron_tp", tmp_path)
    for r in results:
        assert r["dp_world_size"] == 1
        assert_rel_close(r["loss"], r["local_direct_loss"])
    assert results[0]["loss"] != results[1]["loss"]
