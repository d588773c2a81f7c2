"""
Scenarios for tests/unit/test_bridges.py: real CPU NeMo runs, each in a process of its own, with chosen bridge
patches switched off through `BIONEMO_BRIDGE_SKIP`.

    python bridge_scenarios.py torchvision                     # import torchvision (no NeMo: a process of its own)
    python bridge_scenarios.py unified_memory                  # import megatron.core (a process of its own)
    python bridge_scenarios.py run SCENARIO DATA_DIR WORK_DIR  # one scenario in this process (debugging)
    python bridge_scenarios.py batch JOBS_JSON RESULTS_JSON    # many scenarios, each in a forked child

Importing NeMo takes ~15 s, training the tiny model a few seconds. `batch` therefore imports NeMo once and forks one
child per job: nothing is patched before the fork (the bridges are installed by `train()` inside the child, and the
child checks that), so every child starts as a fresh CPU run would, with its own `BIONEMO_BRIDGE_SKIP`, its own
session and process group (killed as a whole on timeout), and its output in its own log file.

Two-rank jobs start both ranks as forked children with torchrun's environment (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
`MASTER_ADDR`, `MASTER_PORT`): Lightning then treats the processes as launched externally (as under torchrun or
SLURM) instead of re-executing the command line per rank.

Every scenario prints `SCENARIO_OK <name>` as its last line when it succeeds. Must stay importable without side
effects: NeMo may start `spawn` processes that re-import the main module.
"""

import contextlib
import faulthandler
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: a script finds the shared `support` there
from bionemo.example_model.bridges.registry import SKIP_ENV  # noqa: E402
from support import free_port  # noqa: E402

OK = "SCENARIO_OK"


def _ok(name: str) -> None:
    print(f"{OK} {name}", flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Scenarios


def scenario_torchvision() -> None:
    """The package's import hook must make torchvision (datasets + transforms) importable on a CPU-only torch."""
    import importlib

    import bionemo.example_model  # noqa: F401  (installs the hook that runs before torchvision's first import)

    # Imported only now, whatever an import sorter does: the package must be imported first, as in every real run.
    torchvision = importlib.import_module("torchvision")
    importlib.import_module("torchvision.datasets")
    importlib.import_module("torchvision.transforms")
    print(f"torchvision {torchvision.__version__} imported", flush=True)
    _ok("torchvision")


def scenario_unified_memory() -> None:
    """
    Importing megatron.core after the package must not build megatron's unified-memory allocator, and must leave that
    module as upstream's does where the build fails: `has_unified_memory` False, upstream's warning, its source."""
    import importlib
    import inspect
    import warnings

    import bionemo.example_model  # noqa: F401  (installs the hook that runs before megatron.core's first import)

    assert "megatron.core" not in sys.modules, "megatron.core was imported before the scenario (not a fresh process?)"
    cpp_extension = importlib.import_module("torch.utils.cpp_extension")
    upstream_load_inline, builds = cpp_extension.load_inline, []

    def load_inline(*args, **kwargs):
        builds.append(kwargs.get("name"))
        return upstream_load_inline(*args, **kwargs)

    cpp_extension.load_inline = load_inline
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.import_module("megatron.core")
    unified_memory = sys.modules["megatron.core.inference.unified_memory"]
    assert cpp_extension.load_inline is load_inline, "load_inline was not put back after the module's import"
    assert unified_memory.load_inline is load_inline, "the module's own load_inline is not torch's after its import"
    assert unified_memory.has_unified_memory is False and unified_memory._alloc is None, vars(unified_memory)
    assert any("Failed to create unified memory mempool." in str(w.message) for w in caught), "upstream's warning"
    assert "load_inline(" in inspect.getsource(unified_memory), "the module's source is not upstream's"
    try:
        unified_memory.create_unified_mempool()
        raise SystemExit("WRONG_ANSWER: create_unified_mempool() worked without unified memory")
    except AssertionError:
        pass
    if builds:
        raise SystemExit(f"LOAD_INLINE_AT_IMPORT: importing megatron.core ran load_inline(name={builds[0]!r})")
    _ok("unified_memory")


def _assert_nothing_patched_yet() -> None:
    from bionemo.example_model import bridges

    installed = bridges.installed()
    assert not installed, f"patches installed before the scenario started (not a fresh process?): {installed}"


class _ContextDumpFailures:
    """Collects NeMo's logged 'Failed to dump ... context' warnings (ModelCheckpoint catches the exception)."""

    def __init__(self) -> None:
        import logging

        self.messages: list[str] = []
        outer = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                message = record.getMessage()
                if "Failed to dump" in message:
                    outer.messages.append(message)

        logging.getLogger("nemo_logger").addHandler(Handler())  # NeMo's logger does not propagate to the root

    def check(self, stage: str) -> None:
        if self.messages:
            raise RuntimeError(f"{stage}: NeMo logged a failed context dump: {self.messages[0]}")


def _opts(data_dir: Path, **kwargs):
    from bionemo.example_model.train import TrainOptions

    base = dict(accelerator="cpu", val_check_interval=2, limit_val_batches=1, micro_batch_size=16, data_dir=data_dir)
    return TrainOptions(**{**base, **kwargs})


def scenario_pretrain_resume(data_dir: Path, work_dir: Path) -> None:
    """Pretrain 2 steps (fresh start, checkpoint save), then resume the same run to 4 steps (checkpoint load)."""
    from bionemo.example_model import bridges
    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.train import train

    _assert_nothing_patched_yet()
    dumps = _ContextDumpFailures()
    run_dir = work_dir / "pretrain"
    ckpt = train(PretrainConfig(), _opts(data_dir, max_steps=2), run_dir, "pretrain")
    dumps.check("pretrain")
    assert (ckpt / "context" / "io.json").is_file(), f"no context/io.json in {ckpt}"
    print(f"PRETRAIN_DONE {ckpt}", flush=True)
    resumed = train(PretrainConfig(), _opts(data_dir, max_steps=4), run_dir, "pretrain")
    dumps.check("resume")
    assert "step=3" in resumed.name, f"resume did not reach step 4: {resumed}"
    print(f"RESUME_DONE {resumed}", flush=True)
    print(f"INSTALLED {json.dumps(bridges.installed())}", flush=True)
    _ok("pretrain_resume")


def _np_product_callers_patched() -> bool:
    """Whether megatron's modules that call `np.product` see a numpy other than numpy itself (the bridge's view)."""
    import importlib

    import numpy

    from bionemo.example_model.bridges.all_devices import _NP_PRODUCT_CALLERS

    seen = {importlib.import_module(name).np is numpy for name in _NP_PRODUCT_CALLERS}
    assert len(seen) == 1, "the bridge replaced `np` in some of megatron's modules but not all"
    return not seen.pop()


def _adam_step_recorder():
    """A Lightning callback that records, at the end of training, the step count of every parameter's Adam state."""
    from lightning.pytorch import Callback

    class AdamSteps(Callback):
        steps: list[float] = []

        def on_train_end(self, trainer, pl_module) -> None:
            chained = trainer.optimizers[0].mcore_optimizer  # NeMo's wrapper -> Megatron's ChainedOptimizer
            adams = [megatron_optimizer.optimizer for megatron_optimizer in chained.chained_optimizers]
            self.steps = sorted({state["step"].item() for adam in adams for state in adam.state.values()})

    return AdamSteps()


def scenario_distopt_resume(data_dir: Path, work_dir: Path) -> None:
    """
    With Megatron's distributed optimizer: pretrain 2 steps, resume to 4; then every parameter's Adam step must be 4.
    """
    from bionemo.example_model import bridges
    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.train import train

    _assert_nothing_patched_yet()
    run_dir = work_dir / "pretrain"
    ckpt = train(PretrainConfig(), _opts(data_dir, max_steps=2, use_distributed_optimizer=True), run_dir, "pretrain")
    print(f"PRETRAIN_DONE {ckpt}", flush=True)
    recorder = _adam_step_recorder()
    opts = _opts(data_dir, max_steps=4, use_distributed_optimizer=True, extra_callbacks=[recorder])
    resumed = train(PretrainConfig(), opts, run_dir, "pretrain")
    print(f"RESUME_DONE {resumed}", flush=True)
    print(f"INSTALLED {json.dumps(bridges.installed())}", flush=True)
    if recorder.steps != [4.0]:
        raise RuntimeError(f"resumed at step 2 and trained 2 steps, but Adam's step counts are {recorder.steps}")
    _ok("distopt_resume")


def scenario_ddp_progress(data_dir: Path, work_dir: Path) -> None:
    """
    One rank of a 2-rank CPU pretrain whose NeMo ProgressPrinter prints (and reports Megatron timers) at every step:
    the printer NeMo's MegatronStrategy puts in place of Lightning's bar in a trainer of the user's own, as in
    upstream's training scripts."""
    from nemo.lightning.pytorch.callbacks.progress_printer import ProgressPrinter

    from bionemo.example_model import bridges
    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.train import train

    _assert_nothing_patched_yet()
    printer = ProgressPrinter(log_interval=1)
    opts = _opts(
        data_dir, max_steps=3, val_check_interval=3, devices=2, log_every_n_steps=1, extra_callbacks=[printer]
    )
    ckpt = train(PretrainConfig(), opts, work_dir / "ddp", "pretrain")
    print(f"RANK {os.environ.get('RANK')} DONE {ckpt}", flush=True)
    print(f"NP_PRODUCT_CALLERS_PATCHED {json.dumps(_np_product_callers_patched())}", flush=True)
    print(f"INSTALLED {json.dumps(bridges.installed())}", flush=True)
    _ok("ddp_progress")


def scenario_install_twice(data_dir: Path, work_dir: Path) -> None:
    """`bridges.install("cpu")` twice: every patch function runs once; the CUDA-as-CPU mode is pushed once."""
    from torch.overrides import _get_current_function_mode_stack

    from bionemo.example_model import bridges

    _assert_nothing_patched_yet()
    calls: dict[str, int] = {}

    def counting(name, fn):
        def wrapper():
            calls[name] = calls.get(name, 0) + 1
            return fn()

        return wrapper

    for patches in bridges.PATCH_SETS.values():
        for name, fn in list(patches.patches.items()):
            patches.patches[name] = counting(name, fn)
    result = {
        "first": bridges.install("cpu"),
        "second": bridges.install("cpu"),
        "calls": calls,
        "registered": {set_name: list(patches.patches) for set_name, patches in bridges.PATCH_SETS.items()},
        "function_modes": len(_get_current_function_mode_stack()),
    }
    print(f"INSTALL_RESULT {json.dumps(result)}", flush=True)
    _ok("install_twice")


def scenario_log_on_one_device(data_dir: Path, work_dir: Path) -> None:
    """
    `self.log` of a value on the device the logged metric is on, twice, as every training step does (through
    Lightning's result collection): the metric must be updated in place, not rebuilt."""
    import torch
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection

    from bionemo.example_model import bridges

    _assert_nothing_patched_yet()
    bridges.install("cpu")
    results = _ResultCollection(training=True)
    results.log("training_step", "loss", torch.tensor(0.5), on_step=True, batch_size=4)
    metric = results["training_step.loss"]
    meta, defaults = metric.meta, metric._defaults
    results.log("training_step", "loss", torch.tensor(1.0), on_step=True, batch_size=4)
    # a batch-size-weighted mean over both calls: (0.5 x 4 + 1.0 x 4) / 8
    assert results["training_step.loss"] is metric and float(metric.compute()) == 0.75, metric
    if metric.meta is not meta or metric._defaults is not defaults:
        raise SystemExit("REBUILT: _ResultMetric.to copied the metric's fields for a device it is already on")
    print(f"INSTALLED {json.dumps(bridges.installed())}", flush=True)
    _ok("log_on_one_device")


def scenario_disabled_one_logger_hooks(data_dir: Path, work_dir: Path) -> None:
    """
    NeMo's OneLogger callback where OneLogger is configured but disabled (this process's RANK was not 0 at NeMo's
    import), called as every training step calls it: after the first call, no hook may set a logger's level again."""
    import logging

    from nemo.lightning.callback_group import CallbackGroup
    from nv_one_logger.api.one_logger_provider import OneLoggerProvider
    from nv_one_logger.training_telemetry.integration.pytorch_lightning import TimeEventCallback

    from bionemo.example_model import bridges

    _assert_nothing_patched_yet()
    bridges.install("cpu")
    provider = OneLoggerProvider.instance()
    assert provider.one_logger_ready and not provider.one_logger_enabled, "needs OneLogger configured and disabled"
    callback = next(cb for cb in CallbackGroup.get_instance().callbacks if isinstance(cb, TimeEventCallback))
    callback.on_train_batch_start(None, None, None, 0)  # the first call may set the configured level
    levels_set: list[str] = []
    set_level = logging.Logger.setLevel
    logging.Logger.setLevel = lambda self, level: (levels_set.append(self.name), set_level(self, level))[-1]
    try:
        for step in range(3):
            callback.on_train_batch_start(None, None, None, step)
            callback.on_train_batch_end(None, None, None, None, step)
    finally:
        logging.Logger.setLevel = set_level
    if levels_set:
        raise SystemExit(f"SET_LEVEL: 6 hook calls set a logger's level {len(levels_set)} times ({levels_set[0]})")
    print(f"INSTALLED {json.dumps(bridges.installed())}", flush=True)
    _ok("disabled_one_logger_hooks")


def _modules_in_a_training_step():
    """
    A Lightning module whose `training_step` takes `(batch, batch_idx)` and one whose takes a `dataloader_iter`, both
    on a fresh CPU trainer inside a training step, where the fit loop runs `self.log`: (trainer, module,
    iterator_module)."""
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def training_step(self, batch, batch_idx):  # noqa: D102
            pass

    class IteratorModule(pl.LightningModule):
        def training_step(self, dataloader_iter):  # noqa: D102
            pass

    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = pl.Trainer(accelerator="cpu", **quiet)
    trainer.training = True
    module, iterator_module = Module(), IteratorModule()
    for m in (module, iterator_module):
        m.trainer, m._current_fx_name = trainer, "training_step"
    return trainer, module, iterator_module


def scenario_repeated_hook_signatures(data_dir: Path, work_dir: Path) -> None:
    """
    What every training step asks of the same methods again: Lightning's `self.log` whether `training_step` takes a
    `dataloader_iter`, NeMo's `CallbackConnector.event` each callback method's signature. Each method's signature
    must be read once, and `log` and `event` must behave as upstream's."""
    import collections
    import inspect

    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from nemo.lightning.megatron_parallel import CallbackConnector

    from bionemo.example_model import bridges

    _assert_nothing_patched_yet()
    bridges.install("cpu")

    class Hooks:
        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_megatron_step_end(self, step):  # noqa: D102
            self.steps.append(step)

    trainer, module, iterator_module = _modules_in_a_training_step()
    hooks, connector = Hooks(), CallbackConnector()
    connector.add(hooks)

    reads: collections.Counter[str] = collections.Counter()  # by the read function's qualified name
    originals = {name: getattr(inspect, name) for name in ("getfullargspec", "signature")}

    def counted(original):
        def read(obj, *args, **kwargs):
            reads[getattr(obj, "__qualname__", "")] += 1
            return original(obj, *args, **kwargs)

        return read

    for name, original in originals.items():
        setattr(inspect, name, counted(original))
    try:
        for step in range(4):
            module.log("loss", float(step), batch_size=1, logger=False)
            try:  # upstream's answer for a `dataloader_iter` step: a log without batch_size is refused
                iterator_module.log("loss", float(step), logger=False)
                raise SystemExit("WRONG_ANSWER: `log` accepted a dataloader_iter step's value without batch_size")
            except MisconfigurationException:
                pass
            connector.event("on_megatron_step_end", step=step, reduced=None)
    finally:
        for name, original in originals.items():
            setattr(inspect, name, original)
    assert float(trainer._results["training_step.loss"].value) == 3.0  # the last value logged, as upstream keeps it
    assert hooks.steps == [0, 1, 2, 3], hooks.steps  # the event still filters the arguments as upstream does
    symptoms = [
        f"{marker}: {reads[method]} reads of {method} in 4 calls"
        for marker, method in (
            ("LOG_SIGNATURE_READS", type(module).training_step.__qualname__),
            ("EVENT_SIGNATURE_READS", Hooks.on_megatron_step_end.__qualname__),
        )
        if reads[method] > 1
    ]
    if symptoms:
        raise SystemExit("; ".join(symptoms))
    print(f"INSTALLED {json.dumps(bridges.installed())}", flush=True)
    _ok("repeated_hook_signatures")


def scenario_cuda_free_calls(data_dir: Path, work_dir: Path) -> None:
    """
    Megatron's CPU optimizer step (torch's AdamW, no closure) and Lightning's `self.log`, as every CPU training step
    makes them: no torch call of theirs may go through the CUDA-as-CPU mode, the mode must be back after each (also
    after a `log` that raises), and both must give what upstream's give under the mode. What may ask for CUDA must
    still be served by the mode: a step's closure, and `log` on a module whose device claims CUDA."""
    import lightning.pytorch as pl
    import torch
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from torch.overrides import _get_current_function_mode_stack

    from bionemo.example_model import bridges

    _assert_nothing_patched_yet()
    upstream_step, upstream_log = torch.optim.Adam.step, pl.LightningModule.log
    bridges.install("cpu")
    (mode,) = _get_current_function_mode_stack()
    calls = {"AdamW.step": 0, "LightningModule.log": 0}
    counting: list[str] = []
    dispatch = type(mode).__torch_function__

    def counted(self, func, types, args=(), kwargs=None):
        # torch's profiling wrapper around every optimizer's `step` (`Optimizer.profile_hook_step`: two profiler
        # calls) is outside `AdamW.step` and stays under the mode
        if counting and not getattr(func, "__module__", "").startswith("torch._ops.profiler"):
            calls[counting[0]] += 1
        return dispatch(self, func, types, args, kwargs)

    type(mode).__torch_function__ = counted

    def adamw_steps(step, label: str | None) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(torch.linspace(-1, 1, 12).reshape(3, 4)), torch.nn.Parameter(torch.ones(4))]
        optimizer = torch.optim.AdamW(params, lr=0.1)
        for i in range(3):
            for p in params:
                p.grad = torch.full_like(p, 0.5 - i)
            counting[:] = [label] if label else []
            step(optimizer)
            counting.clear()
        return [p.detach().clone() for p in params]

    def logged(log, label: str | None) -> tuple[float, float]:
        trainer, module, iterator_module = _modules_in_a_training_step()
        losses = [torch.tensor(step / 3) for step in range(4)]
        counting[:] = [label] if label else []
        for step, loss in enumerate(losses):
            log(module, "loss", loss, on_step=True, on_epoch=True, batch_size=2)
            log(module, "lr", 0.001 * step, batch_size=1, prog_bar=True)
            try:  # upstream refuses a `dataloader_iter` step's value without batch_size; the mode must be back after
                log(iterator_module, "loss", float(step))
                raise SystemExit("WRONG_ANSWER: `log` accepted a dataloader_iter step's value without batch_size")
            except MisconfigurationException:
                assert _get_current_function_mode_stack() == [mode], "the mode is not back after a raising `log`"
        counting.clear()
        results = trainer._results
        return float(results["training_step.loss"].compute()), float(results["training_step.lr"].value)

    bridged = adamw_steps(torch.optim.AdamW.step, "AdamW.step"), logged(pl.LightningModule.log, "LightningModule.log")
    upstream = adamw_steps(upstream_step, None), logged(upstream_log, None)
    if not all(torch.equal(a, b) for a, b in zip(bridged[0], upstream[0])) or bridged[1] != upstream[1]:
        raise SystemExit(f"WRONG_ANSWER: bridged {bridged}, upstream under the mode {upstream}")

    # What may ask for CUDA is still served: a closure (Lightning's automatic optimization runs the training step in
    # it), and `log` on a module moved "to CUDA" (under the mode its device says cuda, its tensors stay on the CPU).
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([param], lr=0.1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (param * torch.ones(2, device="cuda")).sum()
        loss.backward()
        return loss

    assert float(optimizer.step(closure)) == 2.0
    trainer, on_cuda, _ = _modules_in_a_training_step()
    assert on_cuda.cuda(0).device.type == "cuda", on_cuda.device
    on_cuda.log("lr", 0.5, batch_size=1)
    assert float(trainer._results["training_step.lr"].value) == 0.5
    assert _get_current_function_mode_stack() == [mode], "the CUDA-as-CPU mode is not the one mode left"
    if any(calls.values()):
        raise SystemExit("MODE_CALLS: " + ", ".join(f"{n} torch calls of {name}" for name, n in calls.items() if n))
    print(f"INSTALLED {json.dumps(bridges.installed())}", flush=True)
    _ok("cuda_free_calls")


PROCESS_GROUP_ALL_REDUCES = ("allreduce", "allreduce_coalesced")  # what the one-member bridge wraps


def _counting_backend_all_reduces(counts: dict[str, int], counting: list[bool]) -> None:
    """
    While `counting[0]`, count in `counts`, by the first caller outside torch and the bridges, every all-reduce that a
    one-member process group hands to its backend (ProcessGroup's `allreduce` and `allreduce_coalesced`)."""
    from torch._C._distributed_c10d import ProcessGroup

    def counted(name: str):
        original = getattr(ProcessGroup, name)

        def call(self, *args, **kwargs):
            if counting[0] and self.size() == 1:
                frame = sys._getframe(1)
                while any(part in frame.f_code.co_filename for part in ("/torch/", "/bridges/", "/contextlib.py")):
                    frame = frame.f_back  # torch.distributed, the CUDA-as-CPU mode, a coalescing manager's exit
                caller = f"{Path(frame.f_code.co_filename).name} {frame.f_code.co_name}"
                counts[caller] = counts.get(caller, 0) + 1
            return original(self, *args, **kwargs)

        return call

    for name in PROCESS_GROUP_ALL_REDUCES:
        setattr(ProcessGroup, name, counted(name))


@contextlib.contextmanager
def process_group_all_reduces(methods: dict):
    """ProcessGroup's all-reduce methods set to `methods` (name: function) while the block runs."""
    from torch._C._distributed_c10d import ProcessGroup

    current = {name: vars(ProcessGroup)[name] for name in methods}  # the class's own (binding) attributes
    for name, method in methods.items():
        setattr(ProcessGroup, name, method)
    try:
        yield
    finally:
        for name, method in current.items():
            setattr(ProcessGroup, name, method)


def _all_reduce_outcome(calls: list, group, coalescing: bool) -> tuple:
    """
    What `torch.distributed.all_reduce` of a copy of each (tensor, op) of `calls`, one after another or inside one
    coalescing manager, gives: ("value", [(dtype, the values' bytes), ...]) or ("raises", the error's type)."""
    import torch
    import torch.distributed as dist

    outs = [tensor.clone() for tensor, _ in calls]
    manager = dist.distributed_c10d._coalescing_manager(group) if coalescing else contextlib.nullcontext()
    try:
        with manager:
            works = [dist.all_reduce(out, op=op, group=group) for out, (_, op) in zip(outs, calls)]
        for work in works:
            if work is not None:
                work.wait()
    except Exception as error:  # upstream's refusals (an op, dtype or layout a backend lacks) must stay
        return ("raises", type(error).__name__)
    finally:  # a coalesced call that raised leaves its op list behind, and the next coalescing would refuse to start
        dist.distributed_c10d._world.pg_coalesce_state.clear()
    dense = [out.to_dense() if out.layout != torch.strided else out for out in outs]
    return ("value", [(out.dtype, out.contiguous().view(torch.uint8).tolist()) for out in dense])


def assert_one_member_all_reduces_match(upstream: dict, device) -> None:
    """
    On a one-member group of the initialized process group and on the default group (one member), every all-reduce
    below, alone and coalesced, must give what it gives with ProcessGroup's `upstream` all-reduce methods, values or
    error: each reduce op over each dtype, a sparse and a transposed tensor, two dtypes or two ops in one coalescing
    manager. An async call must return work to wait on. `device`: the tensors' torch.device (the GPU node's NCCL check
    in docs/results/h100/issue16/sixth/ passes a CUDA one)."""
    import itertools

    import torch
    import torch.distributed as dist

    group = dist.new_group([0])
    SUM, MAX = dist.ReduceOp.SUM, dist.ReduceOp.MAX
    ops = [SUM, dist.ReduceOp.PRODUCT, dist.ReduceOp.MIN, MAX, dist.ReduceOp.AVG, dist.ReduceOp.BAND]
    ops += [dist.ReduceOp.BXOR, dist.ReduceOp(SUM)]  # a ReduceOp, not its enum
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8]
    dtypes += [torch.int8, torch.bool, torch.complex64]
    values = torch.tensor([[-2.5, 0.0, 3.0], [float("nan"), 1.5, -0.0]], device=device)
    cases = {f"{op} of {dtype}": [(values.to(dtype), op)] for op, dtype in itertools.product(ops, dtypes)}
    cases["a sparse tensor's MAX"] = [(values.to_sparse(), MAX)]
    cases["a transposed tensor's SUM"] = [(values.t(), SUM)]
    cases["two dtypes' SUM"] = [(values, SUM), (values.to(torch.float64), SUM)]
    cases["a SUM and a MAX"] = [(values, SUM), (values * 2, MAX)]
    for (label, calls), where, coalescing in itertools.product(cases.items(), (group, None), (False, True)):
        with process_group_all_reduces(upstream):
            expected = _all_reduce_outcome(calls, where, coalescing)
        got = _all_reduce_outcome(calls, where, coalescing)
        if got != expected:
            raise SystemExit(f"WRONG_ANSWER: {label} (coalesced: {coalescing}): {got}, upstream {expected}")
    if dist.all_reduce(values.clone(), group=group, async_op=True) is None:
        raise SystemExit("WRONG_ANSWER: an async all-reduce returned no work to wait on")


def scenario_one_member_all_reduces(data_dir: Path, work_dir: Path) -> None:
    """
    A one-rank CPU pretrain of 3 steps: no all-reduce over a one-member group may reach the backend in a training
    step. Then, on gloo, the bridged all-reduce must give upstream's answers (assert_one_member_all_reduces_match)."""
    import torch
    import torch.distributed as dist
    from lightning.pytorch import Callback
    from torch._C._distributed_c10d import ProcessGroup

    from bionemo.example_model import bridges
    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.train import train

    _assert_nothing_patched_yet()
    counts: dict[str, int] = {}
    counting = [False]
    _counting_backend_all_reduces(counts, counting)
    upstream = {name: vars(ProcessGroup)[name] for name in PROCESS_GROUP_ALL_REDUCES}  # counting passes through

    class InTrainingSteps(Callback):
        def on_train_batch_start(self, *args) -> None:
            counting[0] = True

        def on_train_batch_end(self, *args) -> None:
            counting[0] = False

    opts = _opts(data_dir, max_steps=3, val_check_interval=3, extra_callbacks=[InTrainingSteps()])
    train(PretrainConfig(), opts, work_dir / "pretrain", "pretrain")
    in_steps = dict(counts)

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    assert_one_member_all_reduces_match(upstream, torch.device("cpu"))
    if in_steps:
        raise SystemExit(
            f"ONE_MEMBER_ALL_REDUCES: {sum(in_steps.values())} all-reduces over a one-member group reached the "
            f"backend in 3 training steps ({in_steps})"
        )
    print(f"INSTALLED {json.dumps(bridges.installed())}", flush=True)
    _ok("one_member_all_reduces")


SCENARIOS = {
    "cuda_free_calls": scenario_cuda_free_calls,
    "one_member_all_reduces": scenario_one_member_all_reduces,
    "pretrain_resume": scenario_pretrain_resume,
    "log_on_one_device": scenario_log_on_one_device,
    "disabled_one_logger_hooks": scenario_disabled_one_logger_hooks,
    "repeated_hook_signatures": scenario_repeated_hook_signatures,
    "ddp_progress": scenario_ddp_progress,
    "install_twice": scenario_install_twice,
    "distopt_resume": scenario_distopt_resume,
}


# ---------------------------------------------------------------------------------------------------------------------
# Batch runner: import once, fork per job.


def _child(job: dict, env: dict, log: Path) -> None:
    """In a forked child: point stdout/stderr at `log`, set the environment, run the scenario; never returns."""
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.environ.update(env)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks into the log before a timeout kill
        if job["skip"]:
            os.environ[SKIP_ENV] = ",".join(job["skip"])
        else:
            os.environ.pop(SKIP_ENV, None)
        work_dir = Path(job["work_dir"])
        work_dir.mkdir(parents=True, exist_ok=True)
        print(f"job {job['name']}: {job['scenario']} with {SKIP_ENV}={os.environ.get(SKIP_ENV, '')!r}", flush=True)
        SCENARIOS[job["scenario"]](Path(job["data_dir"]), work_dir)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _fork(job: dict, env: dict, log: Path) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(job, env, log)
    return pid


def _run_job(job: dict) -> dict:
    """Run one job (all its ranks) in a new session; kill the session's process group on timeout."""
    log_dir = Path(job["work_dir"])
    log_dir.mkdir(parents=True, exist_ok=True)
    ranks = job.get("ranks", 1)
    sys.stdout.flush()
    sys.stderr.flush()
    leader = os.fork()
    if leader == 0:  # session leader: forks the ranks, waits for them, exits with the first non-zero code
        os.setsid()
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        code = 1
        try:
            port = free_port()
            pids = []
            for rank in range(ranks):
                env = {}
                if ranks > 1:
                    env = dict(
                        MASTER_ADDR="127.0.0.1",
                        MASTER_PORT=str(port),
                        WORLD_SIZE=str(ranks),
                        RANK=str(rank),
                        LOCAL_RANK=str(rank),
                        NODE_RANK="0",
                    )
                pids.append(_fork(job, env, log_dir / f"rank{rank}.log"))
            codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
            code = next((c for c in codes if c != 0), 0)
        finally:
            os._exit(code if code >= 0 else 128 - code)
    start = time.monotonic()
    deadline = start + job["timeout"]
    timed_out = False
    while True:
        pid, status = os.waitpid(leader, os.WNOHANG)
        if pid:
            rc = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            timed_out = True
            try:
                os.killpg(leader, signal.SIGUSR1)  # the ranks dump their stacks (the leader ignores it)
                time.sleep(2)
                os.killpg(leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rc = os.waitstatus_to_exitcode(os.waitpid(leader, 0)[1])
            break
        time.sleep(0.2)
    try:  # reap anything of the group that outlived its leader
        os.killpg(leader, signal.SIGKILL)
    except ProcessLookupError:
        pass
    logs = {f"rank{r}": (log_dir / f"rank{r}.log").read_text(errors="replace") for r in range(ranks)}
    return dict(rc=rc, timed_out=timed_out, seconds=round(time.monotonic() - start, 1), logs=logs)


def batch(jobs_json: Path, results_json: Path) -> None:
    """Run the jobs of `jobs_json` one after another; write {name: result} to `results_json` after each."""
    jobs = json.loads(jobs_json.read_text())
    t = time.monotonic()
    # Everything the scenarios import, imported once here (importing patches nothing but torchvision, through the
    # package's import hook: so the package comes first, as in every real run, whatever an import sorter does).
    import importlib

    for module in ("bionemo.example_model.train", "nemo.lightning", "nemo.lightning.io.pl", "nemo.lightning.pytorch"):
        importlib.import_module(module)

    _assert_nothing_patched_yet()
    results: dict = {"_import_seconds": round(time.monotonic() - t, 1)}
    for job in jobs:
        results[job["name"]] = _run_job(job)
        print(f"{job['name']}: rc={results[job['name']]['rc']} {results[job['name']]['seconds']} s", flush=True)
        results_json.write_text(json.dumps(results))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "torchvision":
        scenario_torchvision()
    elif command == "unified_memory":
        scenario_unified_memory()
    elif command == "run":
        SCENARIOS[sys.argv[2]](Path(sys.argv[3]), Path(sys.argv[4]))
    elif command == "batch":
        batch(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(f"unknown command {command!r}")
