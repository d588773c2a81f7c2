"""
The all-device patches: upstream NeMo / Megatron / Lightning breakage that is not about CUDA, and five slownesses
(Lightning's `self.log`, NeMo's OneLogger telemetry and callback events, Megatron's one-member collectives),
installed for every run.

Each names the upstream file and symptom and has a canary in tests/unit/test_bridges.py.
"""

import functools
import sys
import types
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from bionemo.example_model.bridges.registry import PatchSet

if TYPE_CHECKING:
    import torch

__all__: Sequence[str] = ("PATCHES",)

PATCHES = PatchSet()

_LLM_STUBS: dict[str, dict[str, Callable]] = {
    "nemo.collections.llm.modelopt.distill.utils": {
        "get_tensor_shapes_adjust_fn_for_distillation": lambda *args, **kwargs: None,
    },
    "nemo.collections.llm.modelopt.model_utils": {
        "save_modelopt_state": lambda *args, **kwargs: None,
        "restore_modelopt_state": lambda *args, **kwargs: None,
    },
}


@contextmanager
def _llm_modelopt_stubs() -> Iterator[None]:
    """Stand-ins for the two modelopt helper modules, present in sys.modules only for the wrapped call."""
    added = []
    for name, attrs in _LLM_STUBS.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
            added.append(name)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _call_with_llm_stubs(fn: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        with _llm_modelopt_stubs():
            return fn(*args, **kwargs)

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


@PATCHES.register("skip_llm_collection_import")
def _skip_llm_collection_import() -> None:
    """
    Upstream: nemo/lightning/megatron_parallel.py (`MegatronStep.adjust_tensor_shapes_fn`, every step) and
    nemo/lightning/pytorch/strategies/megatron_strategy.py (`save_checkpoint`, `load_checkpoint`) import
    `nemo.collections.llm.modelopt...`, which imports all of nemo.collections.llm (transformers, nemo_run, rich,
    ...). Symptom: `ModuleNotFoundError` on the first training step without those packages. The functions used are
    no-ops for a model without modelopt state and pipeline size 1; the stubs are those no-ops, and only exist while the
    three calls run, so a user who has nemo.collections.llm installed still gets the real package elsewhere."""
    from nemo.lightning.megatron_parallel import MegatronStep
    from nemo.lightning.pytorch.strategies.megatron_strategy import MegatronStrategy

    prop = MegatronStep.adjust_tensor_shapes_fn
    MegatronStep.adjust_tensor_shapes_fn = property(_call_with_llm_stubs(prop.fget))
    MegatronStrategy.save_checkpoint = _call_with_llm_stubs(MegatronStrategy.save_checkpoint)
    MegatronStrategy.load_checkpoint = _call_with_llm_stubs(MegatronStrategy.load_checkpoint)


@PATCHES.register("context_yaml_without_nemo_run")
def _context_yaml_without_nemo_run() -> None:
    """
    Upstream: nemo/lightning/io/mixin.py `IOMixin._io_dump_yaml` imports nemo_run to write context/model.yaml
    after context/io.json. Symptom: every checkpoint save logs a failed context dump (ModuleNotFoundError: nemo_run).
    io.json (what NeMo loads back) is complete without it, so without nemo_run the YAML copy is skipped."""
    import importlib.util

    from nemo.lightning.io.mixin import IOMixin

    if importlib.util.find_spec("nemo_run") is not None:
        return
    IOMixin._io_dump_yaml = lambda self, io, attrs: {}


@PATCHES.register("progress_printer_rank0_collective")
def _progress_printer_rank0_collective() -> None:
    """
    Upstream: nemo/lightning/pytorch/callbacks/progress_printer.py `ProgressPrinter.on_train_batch_end` runs only
    on global rank 0 (the printer is disabled elsewhere) and calls `log_megatron_timers`, whose
    megatron/core/timers.py `_get_elapsed_time_all_ranks` is an all-gather over every rank. Symptom: with 2+ ranks,
    rank 0 issues all-gathers the others never make, the ranks' collective sequences stop matching, and (with gloo)
    both ranks hang at the first checkpoint save, in the broadcast of `ModelCheckpoint.file_exists`. A one-rank
    collective cannot work, so with several ranks the timer report is skipped
    (progress lines are still printed)."""
    import torch.distributed as dist
    from nemo.lightning.pytorch.callbacks.progress_printer import ProgressPrinter

    original = ProgressPrinter.log_megatron_timers

    def log_megatron_timers(self, timers):
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return None
        return original(self, timers)

    ProgressPrinter.log_megatron_timers = log_megatron_timers


# megatron-core 0.15.3 modules that call `np.product`: exchange_utils `_shard_size` (every multi-rank save), mapping
# `ShardedTensor.local_coordinates` and validation `_validate_sharding_for_key_flattened` (flattened shards).
_NP_PRODUCT_CALLERS = (
    "megatron.core.dist_checkpointing.exchange_utils",
    "megatron.core.dist_checkpointing.mapping",
    "megatron.core.dist_checkpointing.validation",
)


def _numpy_with_product() -> types.ModuleType:
    """A view of numpy that adds only the `product` alias (numpy 2 removed it; `prod` does the same)."""
    import numpy

    view = types.ModuleType("numpy", numpy.__doc__)
    view.__getattr__ = lambda name: getattr(numpy, name)  # PEP 562: everything else is numpy's own attribute
    view.product = numpy.prod
    return view


@PATCHES.register("numpy2_product_alias")
def _numpy2_product_alias() -> None:
    """
    Upstream: megatron/core/dist_checkpointing/exchange_utils.py `_shard_size` calls `np.product` (also
    mapping.py `ShardedTensor.local_coordinates`, validation.py `_validate_sharding_for_key_flattened`), which numpy 2
    removed. Symptom: with numpy 2 (GPU nodes ship 2.5) and 2+ ranks, every rank dies at the first checkpoint save
    (the fully parallel save strategy sizes the shards) with `AttributeError: module 'numpy' has no attribute
    'product'`; one rank never gets there. Applied only where numpy lacks `product`, and only to those modules' `np`
    name (a view of numpy with the alias), so numpy itself, and whatever else checks it, still sees numpy 2."""
    import importlib

    import numpy

    if hasattr(numpy, "product"):
        return
    view = _numpy_with_product()
    for name in _NP_PRODUCT_CALLERS:
        importlib.import_module(name).np = view


def _torch_adam_in_distributed_optimizer() -> bool:
    """True where megatron-core's distributed optimizer wraps torch's Adam (no Apex / TransformerEngine)."""
    from megatron.core.optimizer import distrib_optimizer

    return not distrib_optimizer.HAVE_APEX_OR_TE


@PATCHES.register("distributed_optimizer_state_before_first_step")
def _distributed_optimizer_state_before_first_step() -> None:
    """
    Upstream: megatron/core/optimizer/distrib_optimizer.py `DistributedOptimizer.sharded_state_dict(is_loading=True)`
    calls `state_dict()`, which with torch's Adam (no Apex / TE) reads the step from Adam's per-parameter state:
    `steps = list(set([s["step"].item() for s in inner_state_dict["state"].values()])); assert len(steps) == 1`.
    On resume the optimizer has not stepped yet, so that state is empty. Symptom: every resume of a
    distributed-optimizer run dies with a bare `AssertionError` there, from nemo's `MegatronStrategy.load_checkpoint`.
    Fix: before such a load, give every parameter the state torch's Adam creates on its first step (step 0, zero
    moments); the checkpoint's values overwrite it."""
    import torch
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer.sharded_state_dict

    def sharded_state_dict(self, model_sharded_state_dict=None, is_loading=False, *args, **kwargs):
        if is_loading and _torch_adam_in_distributed_optimizer() and not self.optimizer.state:
            self.init_state_fn(self.optimizer, self.config)
            for state in self.optimizer.state.values():
                state["step"] = torch.tensor(0.0)
        return original(self, model_sharded_state_dict or {}, is_loading, *args, **kwargs)

    DistributedOptimizer.sharded_state_dict = sharded_state_dict


@PATCHES.register("distributed_optimizer_load_keeps_step")
def _distributed_optimizer_load_keeps_step() -> None:
    """
    Upstream: megatron/core/optimizer/distrib_optimizer.py `load_parameter_state_from_fully_reshardable` leaves
    torch Adam's `step` out of the tensors it loads ("Handle torch Adam "step" state separately": `load_state_dict`
    has already set it from the param groups), but `_set_main_param_and_optimizer_states` then copies every key of
    the parameter's current state, `step` included, from those tensors (`dst_tensors[key].copy_(tensors[key])`).
    Symptom: loading a fully reshardable distributed-optimizer checkpoint with torch's Adam dies with
    `KeyError: 'step'`. Fix: a parameter's step, when not among the loaded tensors, is kept as it is."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer._set_main_param_and_optimizer_states

    def set_main_param_and_optimizer_states(self, model_param, tensors):
        if _torch_adam_in_distributed_optimizer() and "step" not in tensors:
            current = self._get_main_param_and_optimizer_states(model_param)
            if "step" in current:
                tensors = {**tensors, "step": current["step"]}
        original(self, model_param, tensors)

    DistributedOptimizer._set_main_param_and_optimizer_states = set_main_param_and_optimizer_states


@PATCHES.register("distributed_optimizer_step_per_param")
def _distributed_optimizer_step_per_param() -> None:
    """
    Upstream: megatron/core/optimizer/distrib_optimizer.py `DistributedOptimizer.load_state_dict`, with torch's Adam
    (no Apex / TE), restores the step as ONE tensor put into every parameter's state
    (`step = torch.tensor(steps[0]); for s in state_dict_state.values(): s["step"] = step`). torch's Adam increments
    each parameter's step in place (`step_t += 1`), so after a resume every optimizer step adds one per parameter
    to the shared counter. Symptom: no error; the bias corrections use a wrong step, a resumed run silently drifts
    from the uninterrupted one, and its next checkpoint saves step = resumed step + steps taken x parameters.
    Fix: after the load, each parameter gets its own copy of the step."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer.load_state_dict

    def load_state_dict(self, state_dict):
        original(self, state_dict)
        if _torch_adam_in_distributed_optimizer():
            for state in self.optimizer.state.values():
                if "step" in state:
                    state["step"] = state["step"].clone()

    DistributedOptimizer.load_state_dict = load_state_dict


@functools.lru_cache(maxsize=8)  # one per device a run logs on
def _nothing_to_move(device: "torch.device") -> Callable[[object], bool]:
    """
    A test of whether `apply_to_collection(obj, (Tensor, Metric), move_data_to_device, device)`, Lightning's move of
    a logged metric, has nothing to move in `obj`: every tensor it would find, searching mappings, sequences and
    dataclasses as it does, already on `device`, no torchmetrics Metric (which moves itself) and no frozen dataclass
    (which upstream refuses)."""
    import dataclasses
    from collections.abc import Mapping
    from collections.abc import Sequence as AnySequence

    import torch
    from torchmetrics import Metric

    kinds: dict[type, str] = {}  # what the search does with an object of each type met (see `kind_of`)

    def kind_of(obj: object) -> str:
        # _apply_to_collection_slow's order: the types it moves, then dataclass instances, mappings, sequences.
        if isinstance(obj, torch.Tensor):
            return "tensor"
        if isinstance(obj, Metric):
            return "upstream"
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            # upstream refuses a frozen one (ValueError): let it
            return "upstream" if obj.__dataclass_params__.frozen else "dataclass"  # type: ignore[union-attr]
        if isinstance(obj, Mapping):
            return "mapping"
        if isinstance(obj, AnySequence) and not isinstance(obj, str):
            return "sequence"
        return "leaf"

    def nothing_to_move(obj: object) -> bool:
        # A `_ResultMetric.__dict__` holds ~70 objects and this runs on every `self.log`: the kind is looked up by
        # type, classified once per type (not cached for an object whose `__class__` is not its type: a proxy).
        cls = type(obj)
        kind = kinds.get(cls)
        if kind is None:
            kind = kind_of(obj)
            if obj.__class__ is cls:
                kinds[cls] = kind
        if kind == "leaf":
            return True
        if kind == "tensor":
            return obj.device == device  # type: ignore[attr-defined]
        if kind == "upstream":
            return False
        if kind == "mapping":
            values = obj.values()  # type: ignore[attr-defined]
        elif kind == "sequence":
            values = obj
        else:  # upstream moves only the fields a dataclass's __init__ takes
            values = [getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init]  # type: ignore[arg-type]
        for value in values:
            if not nothing_to_move(value):
                return False
        return True

    return nothing_to_move


@PATCHES.register("result_metric_to_same_device")
def _result_metric_to_same_device() -> None:
    """
    Upstream: lightning/pytorch/trainer/connectors/logger_connector/result.py `_ResultCollection.log` calls
    `self[key].to(value.device)` on every `self.log`, and `_ResultMetric.to` rebuilds the metric's whole `__dict__`
    through `apply_to_collection`, deep-copying its metadata dataclass, even when every tensor is already there.
    Symptom: no error; ~0.26 ms of host time per `self.log` call on this CPU (86% of the call), and NeMo's strategy,
    data sampler and optimizer plus the example's module make 8 such calls every training step. Fix: when the metric
    holds nothing to move (every tensor on that device, no Metric), `.to(device)` returns it as it is, which is what
    upstream's copy amounts to; any other call, or one with more arguments, is upstream's."""
    import torch
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric

    original = _ResultMetric.to

    @functools.wraps(original)
    def to(self: _ResultMetric, *args: Any, **kwargs: Any) -> _ResultMetric:
        if not kwargs and len(args) == 1 and isinstance(args[0], torch.device):
            if _nothing_to_move(args[0])(self.__dict__):
                return self
        return original(self, *args, **kwargs)

    _ResultMetric.to = to


@PATCHES.register("one_logger_level_set_once")
def _one_logger_level_set_once() -> None:
    """
    Upstream: nv_one_logger/core/internal/safe_execution.py `safely_execute` and nv_one_logger/core/internal/logging.py
    `get_logger`. Where OneLogger is configured but not enabled (every process whose RANK was not 0 when NeMo was
    imported, every plain `python` run), each telemetry call resolves its logger through `get_logger`, and since that
    logger never gets a handler, `get_logger` sets its level again, and `Logger.setLevel` clears the level cache of
    every logger in the process (~700 with NeMo). NeMo's OneLogger callback makes two such calls each training step.
    Symptom: no error; ~45 us per call here, ~5% of a CPU b128 step. Fix: when the logger already has the configured
    level and upstream would add no handler, `get_logger` returns it without setting that level again (nothing in
    these libraries sets a logger's `level` without `setLevel`, so no cached level goes stale); any other call, or one
    where reading the configuration raises, is upstream's."""
    import logging

    from nv_one_logger.api.one_logger_provider import OneLoggerProvider
    from nv_one_logger.core.internal import safe_execution

    original = safe_execution.get_logger

    def level_already_set(logger: logging.Logger) -> bool:
        try:
            provider = OneLoggerProvider.instance()
            if not provider.one_logger_ready or provider.one_logger_enabled or logger.handlers:
                return False  # upstream returns at once, or adds handlers
            level = provider.config.logger_config.log_level
        except Exception:
            return False  # upstream's own handling
        return logger.level == (level if isinstance(level, int) else logging.getLevelName(level))

    @functools.wraps(original)
    def get_logger(name: str) -> logging.Logger:
        logger = logging.getLogger(name)
        return logger if level_already_set(logger) else original(name)

    safe_execution.get_logger = get_logger


def _method_function(fn: object) -> types.FunctionType | None:
    """
    The Python function a bound method calls, which is all its signature depends on (not the instance), or None for
    any other callable. A signature cached by it is upstream's unless the function's `__wrapped__` or `__signature__`
    is reassigned after the first read, which nothing in these libraries does."""
    if isinstance(fn, types.MethodType) and isinstance(fn.__func__, types.FunctionType):
        return fn.__func__
    return None


@PATCHES.register("log_reads_training_step_signature_once")
def _log_reads_training_step_signature_once() -> None:
    """
    Upstream: lightning/pytorch/core/module.py `LightningModule.log` calls
    lightning/pytorch/utilities/signature_utils.py `is_param_in_hook_signature(self.training_step, ...)`, which runs
    `inspect.getfullargspec` on every call. Symptom: no error; ~10 us per `self.log`, 8 calls every training step.
    Fix: the answer for a bound method depends only on its function, so it is computed once per function and
    arguments (strings and booleans, as `log` passes them); any other call is upstream's."""
    import weakref

    import lightning.pytorch.core.module as lightning_module

    original = lightning_module.is_param_in_hook_signature
    answers: weakref.WeakKeyDictionary[types.FunctionType, dict[tuple, bool]] = weakref.WeakKeyDictionary()

    @functools.wraps(original)
    def is_param_in_hook_signature(hook_fx: Callable, *args: Any, **kwargs: Any) -> bool:
        function = _method_function(hook_fx)
        if function is None or any(type(value) not in (str, bool) for value in (*args, *kwargs.values())):
            return original(hook_fx, *args, **kwargs)
        known, arguments = answers.setdefault(function, {}), (args, tuple(sorted(kwargs.items())))
        if arguments not in known:
            known[arguments] = original(hook_fx, *args, **kwargs)
        return known[arguments]

    lightning_module.is_param_in_hook_signature = is_param_in_hook_signature


class _InspectReadingMethodSignaturesOnce(types.ModuleType):
    """
    `inspect`, except that `signature(bound_method)` is read once per function (see `_method_function`); every
    other name and call is `inspect`'s own."""

    def __init__(self) -> None:
        import inspect
        import weakref

        super().__init__(inspect.__name__, inspect.__doc__)
        self._inspect = inspect
        self._signatures: weakref.WeakKeyDictionary[types.FunctionType, Any] = weakref.WeakKeyDictionary()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inspect, name)

    def signature(self, obj: Callable, *args: Any, **kwargs: Any) -> Any:
        function = _method_function(obj)
        if function is None or args or kwargs:
            return self._inspect.signature(obj, *args, **kwargs)
        if function not in self._signatures:
            self._signatures[function] = self._inspect.signature(obj)
        return self._signatures[function]


@PATCHES.register("megatron_callbacks_read_signatures_once")
def _megatron_callbacks_read_signatures_once() -> None:
    """
    Upstream: nemo/lightning/megatron_parallel.py `CallbackConnector.event` runs `inspect.signature` on each
    callback's method every time it fires an event, and `MegatronParallel` fires them at every step and microbatch
    (the data sampler's and optimizer module's hooks). Symptom: no error; ~2% of a CPU b128 step. Fix: that module's
    `inspect` reads a bound method's signature once per function."""
    import nemo.lightning.megatron_parallel as megatron_parallel

    megatron_parallel.inspect = _InspectReadingMethodSignaturesOnce()


# Reductions that gloo and NCCL both do for every dtype below, and whose result over one member is that member's
# tensor: gloo refuses AVG of integer tensors, NCCL has no bitwise reductions, and PREMUL_SUM scales.
_ONE_MEMBER_IDENTITY_OPS = ("SUM", "PRODUCT", "MIN", "MAX")
# dtypes both backends reduce
_ONE_MEMBER_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64")


@PATCHES.register("one_member_all_reduce_returns_at_once")
def _one_member_all_reduce_returns_at_once() -> None:
    """
    Upstream: megatron/core/distributed/param_and_grad_buffer.py `_ParamAndGradBucketGroup.start_grad_sync` (the
    gradient buffer's sum over the data-parallel group, in a coalescing manager) and
    megatron/core/optimizer/clip_grads.py `get_grad_norm_fp32` (the gradient norm's sum over the model-parallel group)
    all-reduce every training step whatever the group's size, and torch/distributed/distributed_c10d.py hands a
    one-member group's all-reduce to its backend like any other (`ProcessGroup.allreduce`, or `allreduce_coalesced` at
    a coalescing manager's exit). Symptom: no error; a one-rank step makes two collectives that cannot change a value,
    ~40-130 us each with gloo on this CPU and ~25-60 us of host time with NCCL on an H100, and a data-parallel step
    the model-parallel one. Fix: at the process group, after all that torch does before the backend (its checks, torch
    function modes, a coalescing manager's bookkeeping), a synchronous SUM, PRODUCT, MIN or MAX over a one-member group
    returns no work when its tensors are dense, contiguous, on one device the group has a backend for, and of one dtype
    both backends reduce: over one member, each of those reductions leaves the tensor as it is, and torch waits on no
    work. Any other call is the backend's: an async one (its caller waits on the work), another op, layout, dtype or
    device, a group of several members."""
    import torch
    from torch._C._distributed_c10d import ProcessGroup, ReduceOp

    ops = {getattr(ReduceOp.RedOpType, name) for name in _ONE_MEMBER_IDENTITY_OPS}
    dtypes = {getattr(torch, name) for name in _ONE_MEMBER_DTYPES}

    def nothing_to_reduce(group: ProcessGroup, tensors: object, opts: object) -> bool:
        if group.size() != 1 or opts.asyncOp or opts.reduceOp.op not in ops:  # type: ignore[attr-defined]
            return False
        if not isinstance(tensors, (list, tuple)) or not tensors:
            return False
        first = tensors[0]
        for tensor in tensors:  # the first is checked first, so reading its dtype and device below is safe
            if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.layout is not torch.strided:
                return False
            if tensor.dtype != first.dtype or tensor.device != first.device:
                return False
            if not tensor.is_contiguous():
                return False
        if first.dtype not in dtypes:
            return False
        try:
            group._get_backend(first.device)  # type: ignore[attr-defined]
        except RuntimeError:  # no backend for that device: the backend call raises
            return False
        return True

    def returning_at_once(name: str) -> None:
        original = getattr(ProcessGroup, name)

        @functools.wraps(original)
        def collective(self: ProcessGroup, *args: Any, **kwargs: Any) -> Any:
            if len(args) == 2 and not kwargs and nothing_to_reduce(self, *args):
                return None
            return original(self, *args, **kwargs)

        setattr(ProcessGroup, name, collective)

    returning_at_once("allreduce")
    returning_at_once("allreduce_coalesced")
