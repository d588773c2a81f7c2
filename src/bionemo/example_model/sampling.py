"""
Batched, bit-exact equivalents of bionemo-core's per-index epoch shuffling.

`MultiEpochDatasetResampler` maps one global sample index at a time to an `EpochIndex`, calling
`bionemo.core.data.permute.permute` in Python for each. The example's fast data path gathers whole batches at
once, so it needs the same mapping for a tensor of indices. Any difference, even in one bit, would silently change
which samples a run sees, so the functions here reproduce upstream exactly and the property tests check it.

Why int64 wraparound is exact: upstream hashes with a Python-int index and either a Python-int seed (unbounded
arithmetic) or, inside the resampler, an `np.int64` seed (arithmetic wraps modulo 2**64). XOR, AND and
multiplication only carry information from low bits to high bits, every right shift of the running value applies
to it after masking with `w < 2**32`, and the seed's own shifts are taken exactly (in Python) before wrapping. So
the low 64 bits of every intermediate agree under both, and the final `& w` keeps only low bits. The closing
`(index + seed) % length` is done without overflow, which equals both upstream variants for the resampler's
seeds (< 2**31); for a huge `np.int64` seed upstream's own sum would wrap, and this follows the exact value.

The arithmetic runs in NumPy on zero-copy views of the tensors: for batch-sized arrays a NumPy ufunc call costs
about a third of a torch op, and the hash is ~25 such calls per cycle-walking round.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from bionemo.core.data.multi_epoch_dataset import MultiEpochDatasetResampler

__all__ = ["check_resampler_args", "permute_many", "resampler_epoch_indices"]

_ONE_ITEM_SHUFFLE_MESSAGE = "a one-item dataset cannot be shuffled: use shuffle=False"

_MASK64 = (1 << 64) - 1


def _wrap_int64(value: int) -> int:
    """Reduce a non-negative Python int to the int64 with the same low 64 bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _smear_mask(length: int) -> int:
    """Upstream's all-ones mask covering `length - 1` (it smears only up to `>> 16`, reproduced as is)."""
    w = length - 1
    w |= w >> 1
    w |= w >> 2
    w |= w >> 4
    w |= w >> 8
    w |= w >> 16
    return w


def check_resampler_args(dataset_len: int, shuffle: bool) -> None:
    """
    Reject resampler settings that upstream only fails on later, with an obscure message.

    Upstream's `permute` refuses ranges of length <= 1, so a shuffled one-item dataset builds fine and then raises
    "The length of the permuted range must be greater than 1." on its first sample. Call this when building the
    data pipeline to fail early and say what to change.

    Raises:
        ValueError: if `dataset_len` is negative, or it is 1 and `shuffle` is set.
    """
    if dataset_len < 0:
        raise ValueError(f"dataset length must be >= 0, got {dataset_len}")
    if shuffle and dataset_len == 1:
        raise ValueError(_ONE_ITEM_SHUFFLE_MESSAGE)


def _as_int64_numpy(indices: torch.Tensor) -> np.ndarray:
    """Return a flat int64 NumPy view (or copy) of an integer tensor."""
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"indices must have an integer dtype, got {indices.dtype}")
    if indices.device.type != "cpu" or indices.dtype != torch.int64:
        indices = indices.to(device="cpu", dtype=torch.int64)
    return indices.detach().reshape(-1).numpy()


# Multipliers of upstream's hash, in order; the third one is folded with the seed-dependent `1 | seed >> 27`.
_MUL1, _MUL2, _MUL3, _MUL4, _MUL5, _MUL6 = 0xE170893D, 0x0929EB3F, 0x6935FA69, 0x74DCB303, 0x9E501CC3, 0xC860A3DF

# Largest range upstream's mask covers fully (see `permute_many`).
_MAX_LENGTH = 1 << 32

# Entries hashed per pass: bounds the scratch memory (the hash's constant rows are this long) for long index arrays.
_CHUNK = 1 << 16


def _to_tensor_like(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Wrap a flat int64 array as a tensor shaped and placed like `like`."""
    result = torch.from_numpy(values)
    if like.dim() != 1:
        result = result.reshape(like.shape)
    return result if like.device.type == "cpu" else result.to(like.device)


def _permute_array(index: np.ndarray, length: int, seed: int | np.ndarray) -> np.ndarray:
    """
    Core of `permute` for a flat int64 array; `seed` is one int or an int64 array aligned with `index`.

    Arguments are assumed valid. Every operand is a full-length array because, for batch-sized arrays, a NumPy
    ufunc with a scalar operand costs ~3x one with an array operand (the scalar is converted on every call), and
    the hash is ~20 ufunc calls per cycle-walking round. Each round records the entries that landed in range, which
    is what upstream's per-index `while True` loop returns, and hashes only the others again: the mask is under
    twice the length, so on average fewer than half the entries walk on after a round and the expected work is
    under two rounds' whatever the longest walk (re-hashing whole chunks every round made the example's epoch order
    2-3x slower).
    """
    n = index.size
    m = min(n, _CHUNK)
    w = _smear_mask(length)
    per_entry = isinstance(seed, np.ndarray)
    shared = [w, length, 4, 1, 11, 2, _MUL1, _MUL2, _MUL4, _MUL5, _MUL6]
    if per_entry:
        # Per-entry seeds (non-negative int64): NumPy array arithmetic wraps like int64.
        seed_rows = [seed, seed >> 16, seed >> 8, seed >> 23, (1 | (seed >> 27)) * np.int64(_MUL3), seed % length]
    else:
        # Any non-negative Python int: keep the low 64 bits of each seed-derived constant. `index *= 1 | seed >> 27`
        # followed by `index *= 0x6935FA69` is folded into one multiply (associative mod 2**64).
        shared += [_wrap_int64(seed >> k) for k in (0, 16, 8, 23)]
        shared += [_wrap_int64((1 | (seed >> 27)) * _MUL3), seed % length]
    # One (rows, m) fill instead of a `np.full` per constant: setup is a visible share of a 128-entry call.
    table = np.empty((len(shared), m), dtype=np.int64)
    table[...] = np.array(shared, dtype=np.int64)[:, None]
    fixed = list(table[:11])
    if not per_entry:
        seed_rows = list(table[11:])
    *hash_rows, shift_row = seed_rows  # the hash's five seed rows; the final shift (seed % length)

    xor, band, rshift, mul = np.bitwise_xor, np.bitwise_and, np.right_shift, np.multiply
    out = np.empty_like(index)
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        k = hi - lo
        x = index[lo:hi].copy()
        res = out[lo:hi]
        at = np.arange(k)  # where in `res` each entry still cycle-walking belongs
        walking_rows = [r[lo:hi] if per_entry else r[:k] for r in hash_rows]
        while True:
            size = x.size
            w_, len_, c4, c1, c11, c2, m1, m2, m4, m5, m6 = (r[:size] for r in fixed)
            s0, s16, s8, s23, mul3 = walking_rows if per_entry else (r[:size] for r in walking_rows)
            t = np.empty_like(x)
            xor(x, s0, x)
            mul(x, m1, x)
            xor(x, s16, x)
            xor(x, rshift(band(x, w_, t), c4, t), x)
            xor(x, s8, x)
            mul(x, m2, x)
            xor(x, s23, x)
            xor(x, rshift(band(x, w_, t), c1, t), x)
            mul(x, mul3, x)
            xor(x, rshift(band(x, w_, t), c11, t), x)
            mul(x, m4, x)
            xor(x, rshift(band(x, w_, t), c2, t), x)
            mul(x, m5, x)
            xor(x, rshift(band(x, w_, t), c2, t), x)
            mul(x, m6, x)
            band(x, w_, x)

            walking = x >= len_
            if not walking.any():  # all in range: where upstream's per-index loop returns
                res[at] = x
                break
            landed = ~walking
            res[at[landed]] = x[landed]
            # Only the entries still out of range are hashed again: a round costs what is left to walk.
            x, at = x[walking], at[walking]
            if per_entry:
                walking_rows = [r[walking] for r in walking_rows]

        # (res + shift) % length without int64 overflow, as both terms are in [0, length).
        shift = shift_row[lo:hi] if per_entry else shift_row[:k]
        gap = fixed[1][:k] - shift
        res[...] = np.where(res >= gap, res - gap, res + shift)
    return out


def permute_many(indices: torch.Tensor, length: int, seed: int) -> torch.Tensor:
    """
    Apply `bionemo.core.data.permute.permute(i, length, seed)` to every entry of `indices` at once.

    Bitwise identical to upstream for Python-int and `np.int64` seeds (see the module docstring for why int64
    arithmetic is exact), without a Python loop per index.

    Args:
        indices: integer tensor of any shape, every entry in [0, length).
        length: size of the permuted range, in [2, 2**32] (upstream stops permuting beyond 2**32).
        seed: permutation seed, >= 0.

    Returns:
        int64 tensor of the same shape and device with the permuted indices.

    Raises:
        ValueError: on the arguments upstream rejects (length <= 1, an index outside [0, length), seed < 0), and
            on length > 2**32.
    """
    length = operator.index(length)
    seed = operator.index(seed)  # accepts np.int64, as the resampler passes; rejects floats like upstream's `^=`
    if length <= 1:
        raise ValueError(f"The length of the permuted range must be greater than 1, got {length}.")
    if length > _MAX_LENGTH:
        # Upstream smears `length - 1` only down by 31 bits, so beyond 2**32 its mask has zero low bits: the result
        # is no longer a permutation (and cycle-walking may not end). Refuse instead of reproducing that.
        raise ValueError(f"The length of the permuted range must be at most 2**32, got {length}.")
    flat = _as_int64_numpy(indices)
    if flat.size and (flat.min() < 0 or flat.max() >= length):
        bad = flat[(flat < 0) | (flat >= length)][0]
        raise ValueError(f"The index to permute must be in the range [0, {length}), got {bad}.")
    if seed < 0:
        raise ValueError(f"The permutation seed must be greater than or equal to 0, got {seed}.")
    if flat.size == 0:
        return torch.empty(indices.shape, dtype=torch.int64, device=indices.device)
    return _to_tensor_like(_permute_array(flat, length, seed), indices)


def resampler_epoch_indices(
    resampler: MultiEpochDatasetResampler, global_indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Map a batch of global sample indices to `(epoch, idx)` exactly as `resampler` does one index at a time.

    Equals `resampler._global_index_to_permuted_local_index(i)` for each `i`: `epoch = i // n`, and `idx` is
    `i % n` permuted with `resampler.epoch_seeds[epoch]` when `resampler.shuffle`, else `i % n` unchanged,
    where `n = len(resampler.dataset)`.

    Returns:
        `(epochs, idx)`, two int64 tensors shaped and placed like `global_indices`.

    Raises:
        IndexError: if any index is outside [0, len(resampler)), as `resampler[i]` would.
        ValueError: for a one-item dataset with `shuffle=True` (upstream fails obscurely; see
            `check_resampler_args`).
    """
    flat = _as_int64_numpy(global_indices)
    total = len(resampler)
    if flat.size and (flat.min() < 0 or flat.max() >= total):
        bad = flat[(flat < 0) | (flat >= total)][0]
        raise IndexError(f"Index {bad} out of bounds for dataset of length {total}.")
    n = len(resampler.dataset)
    check_resampler_args(n, resampler.shuffle)

    epochs, local = np.divmod(flat, n) if flat.size else (flat.copy(), flat.copy())
    if resampler.shuffle and flat.size:
        seeds = np.asarray(resampler.epoch_seeds, dtype=np.int64)[epochs]
        if (seeds < 0).any():
            raise ValueError("The permutation seed must be greater than or equal to 0.")
        # One shared seed (the usual batch inside one epoch) is cheaper than per-entry seed arrays.
        seed_arg = int(seeds[0]) if epochs.min() == epochs.max() else seeds
        local = _permute_array(local, n, seed_arg)

    return _to_tensor_like(epochs, global_indices), _to_tensor_like(local, global_indices)
