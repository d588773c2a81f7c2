"""Counting the tensor values code reads back to the host: each is a device sync on a GPU."""

from typing import Sequence

__all__: Sequence[str] = ("host_reads",)


def host_reads(counter: list[str]):
    """
    A TorchFunctionMode that appends to `counter` the name of each `item`, `float`, `tolist` or `bool` of a tensor
    made under it. Built on call, so importing this module does not import torch. (A tensor built from a list of
    tensors, `torch.tensor([t, ...])`, reads them too, unseen by any function mode.)"""
    import torch
    from torch.overrides import TorchFunctionMode

    reads = (torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.tolist, torch.Tensor.__bool__)

    class HostReads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in reads:
                counter.append(func.__name__)
            return func(*args, **(kwargs or {}))

    return HostReads()
