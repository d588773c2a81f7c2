"""
Canaries for the patches in `bionemo.example_model.bridges`: every registered patch, and the torchvision hook.

For every patch, two tests on a real CPU NeMo run (the scenarios are in `bridge_scenarios.py`):

- `test_<patch>_makes_<scenario>_work`: with every patch on, the scenario succeeds (and the patch was installed);
- `test_without_<patch>_upstream_still_fails_with_<symptom>`: with only that patch switched off
  (`BIONEMO_BRIDGE_SKIP=<patch>`), the scenario fails with the upstream symptom the patch documents. When
  upstream is fixed this canary fails, and its message says to delete the patch.

The symptoms observed with torch 2.13.0+cpu, megatron-core and NeMo as pinned (and what each canary asserts):

- torchvision_op_schemas: importing torchvision raises `RuntimeError: operator torchvision::nms does not exist`.
- cuda_runtime_on_cpu: `RuntimeError: torch.cuda.Stream requires CUDA support`, from
  nemo/lightning/megatron_parallel.py `init_model_parallel` during `trainer.fit` setup. It is the first CUDA call
  of a CPU run, before the model and optimizer exist, so it is this patch's symptom even with the other on.
- cuda_tensors_on_cpu: `AssertionError: Torch not compiled with CUDA enabled` (torch's `_lazy_init`; an
  AssertionError, not a RuntimeError, on this torch) from megatron/core/optimizer/optimizer.py `FP32Optimizer.__init__`
  (`torch.tensor([1.0], device='cuda')`), when the optimizer is built: the first hard-coded CUDA tensor reached once
  cuda_runtime_on_cpu has got the run past `init_model_parallel`.
- resume_without_cuda_init: the fresh pretrain works; resuming it fails in nemo/lightning/io/pl.py
  `_fix_tensors_device` with `AssertionError: (False, False)`.
- skip_llm_collection_import: the first training step (`MegatronStep.adjust_tensor_shapes_fn`) imports
  nemo.collections.llm and fails with `ModuleNotFoundError: No module named ...` (here `'rich'`, from
  nemo/collections/llm/peft/api.py; which package is missing first depends on the environment).
- context_yaml_without_nemo_run: training does not stop, ModelCheckpoint catches the error and logs
  `Failed to dump training context for checkpoint <path>: No module named 'nemo_run'`; the scenario turns that
  logged warning into a failure.
- progress_printer_rank0_collective: a 2-rank run with the printer printing every step never finishes. Rank 0
  prints every progress line (its extra timer all-gathers are paired with rank 1's other gloo collectives, so the
  steps do not block), then both ranks hang in `broadcast` in nemo's ModelCheckpoint `file_exists` at the first
  checkpoint save: the ranks' collective sequences no longer match. The canary asserts the hang (timeout, with the
  all-patches run finishing well inside it) and that rank 0 printed its progress lines.
- numpy2_product_alias (numpy 2 only; `nox -s "tests(stack='gpu-node')"`): both ranks of a 2-rank run die at the
  first checkpoint save with `AttributeError: module 'numpy' has no attribute 'product'`, raised in
  megatron/core/dist_checkpointing/exchange_utils.py `_shard_size`. On numpy 1 there is nothing to show: the patch
  must then leave megatron's modules alone.
- result_metric_to_same_device: no error. Logging a value twice on the CPU, the second `self.log` (Lightning's
  `_ResultCollection.log`, its `self[key].to(value.device)`) replaces the metric's metadata and state defaults with
  copies; the scenario turns that into a failure (`REBUILT: ...`).
- one_logger_level_set_once: no error. Where OneLogger is configured but disabled, each call of NeMo's OneLogger
  callback's per-step hooks sets a logger's level again (nv_one_logger's `get_logger`), which clears every logger's
  level cache; the scenario turns a `Logger.setLevel` after the first call into a failure (`SET_LEVEL: ...`).
- cuda_free_calls_outside_the_cpu_mode: no error. Under cuda_tensors_on_cpu's process-wide TorchFunctionMode, every
  torch call of torch's AdamW step (Megatron's optimizer without Apex) and of Lightning's `self.log` goes through the
  mode's Python dispatch; the scenario turns any such call into a failure (`MODE_CALLS: ...`).
- log_reads_training_step_signature_once, megatron_callbacks_read_signatures_once: no error. Lightning's `self.log`
  reads `training_step`'s argument spec on every call, and NeMo's `CallbackConnector.event` each callback method's
  signature on every event; the scenario turns a second read of one method into a failure
  (`LOG_SIGNATURE_READS: ...`, `EVENT_SIGNATURE_READS: ...`).
- distributed_optimizer_state_before_first_step: a fresh distributed-optimizer pretrain works; resuming it fails in
  megatron/core/optimizer/distrib_optimizer.py `DistributedOptimizer.state_dict` (`assert len(steps) == 1`, a bare
  `AssertionError`): torch's Adam has no state before its first step.
- distributed_optimizer_load_keeps_step: the resume fails with `KeyError: 'step'` in the same file's
  `_set_main_param_and_optimizer_states`, called by `load_parameter_state_from_fully_reshardable`.
- distributed_optimizer_step_per_param: the resume works, but every parameter's Adam state shares one step tensor:
  resumed at step 2 and trained 2 steps, Adam's step is 18 (2 + 2 steps x 8 parameters), not 4; the scenario turns
  that into a failure.

NeMo imports in ~15 s, so the NeMo scenarios run as jobs of one `bridge_scenarios.py batch` process that imports
once and forks one fresh child per (scenario, skip set), each installing the bridges itself; only the jobs the
selected tests need are run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bionemo.example_model.bridges import unified_memory_import
from bionemo.example_model.bridges.registry import SKIP_ENV
from support.processes import LAUNCHER_ENV

SCRIPT = Path(__file__).with_name("bridge_scenarios.py")
OK = "SCENARIO_OK"
HANG_TIMEOUT_S = 60  # the 2-rank run with every patch on takes ~10 s here
JOB_TIMEOUT_S = 150

torch = pytest.importorskip("torch")
numpy = pytest.importorskip("numpy")
NUMPY_HAS_PRODUCT = hasattr(numpy, "product")  # numpy 1: the numpy2_product_alias symptom cannot occur
pytestmark = pytest.mark.skipif(
    torch.version.cuda is not None,
    reason="the canaries document the symptoms of a CPU-only torch; on a CUDA torch the CPU bridges are not used",
)


_DROPPED_ENV = (SKIP_ENV, *LAUNCHER_ENV)


def _env(skip: list[str] | None = None) -> dict[str, str]:
    """This environment without any bridge switch or launcher variables, plus `BIONEMO_BRIDGE_SKIP=skip`."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    if skip:
        env[SKIP_ENV] = ",".join(skip)
    return env


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "...\n" + text[-n:]


def _home(patch: str) -> str:
    """The module that holds `patch`, as registered."""
    from bionemo.example_model import bridges
    from bionemo.example_model.bridges import torchvision_import

    homes = {name: fn.__module__ for patches in bridges.PATCH_SETS.values() for name, fn in patches.patches.items()}
    homes["torchvision_op_schemas"] = torchvision_import.__name__  # the import hooks, not registered patches
    homes[unified_memory_import.PATCH] = unified_memory_import.__name__
    return homes[patch]


def _upstream_fixed(patch: str, symptom: str, rc: int, output: str) -> str:
    module = _home(patch)
    return (
        f"UPSTREAM FIXED? With the {patch!r} bridge switched off ({SKIP_ENV}={patch}) the scenario no longer fails "
        f"with the documented upstream symptom {symptom!r} (exit code {rc}). If it now succeeds, upstream is fixed: "
        f"delete the {patch!r} patch from {module} and this canary. If it fails differently, upstream changed: "
        f"update the patch's docstring and this canary.\n--- output ---\n{_tail(output)}"
    )


def _import_scenario(scenario: str, skip: list[str] | None, timeout_s: int) -> subprocess.CompletedProcess:
    """One fresh process running an import scenario of `bridge_scenarios.py` with the `skip` bridges off."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), scenario], env=_env(skip), capture_output=True, text=True, timeout=timeout_s
    )


# ---------------------------------------------------------------------------------------------------------------------
# torchvision: no NeMo needed, one plain subprocess each.


def _torchvision(skip: list[str] | None) -> subprocess.CompletedProcess:
    return _import_scenario("torchvision", skip, timeout_s=120)


def test_torchvision_op_schemas_makes_torchvision_import_work():
    proc = _torchvision(None)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"{OK} torchvision" in output, _tail(output)


def test_without_torchvision_op_schemas_upstream_still_fails_with_nms_operator_missing():
    proc = _torchvision(["torchvision_op_schemas"])
    output = proc.stdout + proc.stderr
    symptom = "RuntimeError: operator torchvision::nms does not exist"
    assert proc.returncode != 0 and symptom in output, _upstream_fixed(
        "torchvision_op_schemas", symptom, proc.returncode, output
    )


# ---------------------------------------------------------------------------------------------------------------------
# megatron.core's import: one plain subprocess each.


def _unified_memory(skip: list[str] | None) -> subprocess.CompletedProcess:
    return _import_scenario("unified_memory", skip, timeout_s=180)


def test_unified_memory_not_built_at_import_imports_megatron_without_a_build_and_with_upstreams_failed_build_state():
    proc = _unified_memory(None)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"{OK} unified_memory" in output, _tail(output)


def test_without_unified_memory_not_built_at_import_megatron_still_builds_its_allocator_on_import():
    proc = _unified_memory([unified_memory_import.PATCH])
    output = proc.stdout + proc.stderr
    symptom = "LOAD_INLINE_AT_IMPORT: importing megatron.core ran load_inline(name='managed_alloc_runtime')"
    assert proc.returncode != 0 and symptom in output, _upstream_fixed(
        unified_memory_import.PATCH, symptom, proc.returncode, output
    )


# ---------------------------------------------------------------------------------------------------------------------
# NeMo scenarios: jobs of one batch process.

DISTOPT_PATCHES = (
    "distributed_optimizer_state_before_first_step",
    "distributed_optimizer_load_keeps_step",
    "distributed_optimizer_step_per_param",
)
SIGNATURE_PATCHES = {  # patch: the symptom its scenario reports without it
    "log_reads_training_step_signature_once": "LOG_SIGNATURE_READS: ",
    "megatron_callbacks_read_signatures_once": "EVENT_SIGNATURE_READS: ",
}

# name: (scenario, skipped patches, ranks, timeout in s); run in this order (the hang reference before the hang).
JOBS: dict[str, tuple[str, list[str], int, int]] = {
    "all_on": ("pretrain_resume", [], 1, JOB_TIMEOUT_S),
    "install_twice": ("install_twice", [], 1, JOB_TIMEOUT_S),
    **{
        f"without_{patch}": ("pretrain_resume", [patch], 1, JOB_TIMEOUT_S)
        for patch in (
            "cuda_tensors_on_cpu",
            "cuda_runtime_on_cpu",
            "resume_without_cuda_init",
            "skip_llm_collection_import",
            "context_yaml_without_nemo_run",
        )
    },
    "log_all_on": ("log_on_one_device", [], 1, JOB_TIMEOUT_S),
    "log_without_result_metric_to_same_device": (
        "log_on_one_device",
        ["result_metric_to_same_device"],
        1,
        JOB_TIMEOUT_S,
    ),
    "one_logger_all_on": ("disabled_one_logger_hooks", [], 1, JOB_TIMEOUT_S),
    "one_logger_without_one_logger_level_set_once": (
        "disabled_one_logger_hooks",
        ["one_logger_level_set_once"],
        1,
        JOB_TIMEOUT_S,
    ),
    "cuda_free_all_on": ("cuda_free_calls", [], 1, JOB_TIMEOUT_S),
    "cuda_free_without_cuda_free_calls_outside_the_cpu_mode": (
        "cuda_free_calls",
        ["cuda_free_calls_outside_the_cpu_mode"],
        1,
        JOB_TIMEOUT_S,
    ),
    "one_member_all_on": ("one_member_all_reduces", [], 1, JOB_TIMEOUT_S),
    "one_member_without_one_member_all_reduce_returns_at_once": (
        "one_member_all_reduces",
        ["one_member_all_reduce_returns_at_once"],
        1,
        JOB_TIMEOUT_S,
    ),
    "signatures_all_on": ("repeated_hook_signatures", [], 1, JOB_TIMEOUT_S),
    **{
        f"signatures_without_{patch}": ("repeated_hook_signatures", [patch], 1, JOB_TIMEOUT_S)
        for patch in SIGNATURE_PATCHES
    },
    "distopt_all_on": ("distopt_resume", [], 1, JOB_TIMEOUT_S),
    **{f"distopt_without_{patch}": ("distopt_resume", [patch], 1, JOB_TIMEOUT_S) for patch in DISTOPT_PATCHES},
    "ddp_all_on": ("ddp_progress", [], 2, JOB_TIMEOUT_S),
    "ddp_without_progress_printer_rank0_collective": (
        "ddp_progress",
        ["progress_printer_rank0_collective"],
        2,
        HANG_TIMEOUT_S,
    ),
    **(
        {}
        if NUMPY_HAS_PRODUCT
        else {"ddp_without_numpy2_product_alias": ("ddp_progress", ["numpy2_product_alias"], 2, JOB_TIMEOUT_S)}
    ),
}


def test_every_registered_patch_has_a_canary_job():
    """A patch added to either registry without a job that runs its scenario with it switched off fails here."""
    from bionemo.example_model import bridges

    registered = {name for patches in bridges.PATCH_SETS.values() for name in patches.patches}
    canaried = {patch for _, skipped, _, _ in JOBS.values() for patch in skipped}
    if NUMPY_HAS_PRODUCT:  # its job runs only where numpy 2's symptom can occur (stack='gpu-node')
        canaried.add("numpy2_product_alias")
    assert canaried == registered


def uses(*jobs: str):
    """Declare the batch jobs a test reads (the batch runs only the jobs of the selected tests)."""

    def mark(fn):
        fn.bridge_jobs = jobs
        return fn

    return mark


@pytest.fixture(scope="module")
def runs(request, mnist_root, tmp_path_factory) -> dict:
    """{job name: {rc, timed_out, seconds, logs: {rank0: text, ...}}} for every job the selected tests use."""
    module = sys.modules[__name__]
    needed = {
        job
        for item in request.session.items
        if getattr(item, "module", None) is module
        for job in getattr(getattr(item, "function", None), "bridge_jobs", ())
    }
    root = tmp_path_factory.mktemp("bridge")
    jobs = [
        dict(
            name=name,
            scenario=scenario,
            skip=skip,
            ranks=ranks,
            timeout=timeout,
            data_dir=str(mnist_root),
            work_dir=str(root / name),
        )
        for name, (scenario, skip, ranks, timeout) in JOBS.items()
        if name in needed
    ]
    (root / "jobs.json").write_text(json.dumps(jobs))
    results_path = root / "results.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "batch", str(root / "jobs.json"), str(results_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120 + sum(job["timeout"] + 15 for job in jobs),
    )
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    missing = [job["name"] for job in jobs if job["name"] not in results]
    assert proc.returncode == 0 and not missing, (
        f"the scenario batch failed (rc {proc.returncode}), jobs without a result: {missing}\n"
        f"{_tail(proc.stdout + proc.stderr)}"
    )
    return results


def _log(runs: dict, job: str, rank: int = 0) -> str:
    return runs[job]["logs"][f"rank{rank}"]


def _installed(log: str) -> list[str]:
    line = next((line for line in log.splitlines() if line.startswith("INSTALLED ")), None)
    assert line is not None, f"the scenario did not report its installed patches\n{_tail(log)}"
    return json.loads(line.removeprefix("INSTALLED "))


def _assert_succeeded(runs: dict, job: str, patch: str, *markers: str, ranks: int = 1) -> None:
    for rank in range(ranks):
        log = _log(runs, job, rank)
        for marker in (*markers, OK):
            assert runs[job]["rc"] == 0 and marker in log, (
                f"job {job!r} (every bridge on) failed (rc {runs[job]['rc']}, rank {rank}, missing {marker!r})\n"
                f"{_tail(log)}"
            )
        assert patch in _installed(log), f"the {patch!r} bridge was not installed in job {job!r}"


def _assert_canary(runs: dict, job: str, patch: str, symptom: str, *evidence: str) -> str:
    """The job failed, its log has `symptom` and every `evidence` string (where it comes from); returns the log."""
    log = _log(runs, job)
    rc = runs[job]["rc"]
    assert rc != 0 and OK not in log and symptom in log, _upstream_fixed(patch, symptom, rc, log)
    for text in evidence:
        assert text in log, _upstream_fixed(patch, f"{symptom} ({text})", rc, log)
    return log


# --- cuda_runtime_on_cpu ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@uses("all_on")
def test_cuda_runtime_on_cpu_makes_cpu_pretrain_work(runs):
    _assert_succeeded(runs, "all_on", "cuda_runtime_on_cpu", "PRETRAIN_DONE")


@pytest.mark.slow
@uses("without_cuda_runtime_on_cpu")
def test_without_cuda_runtime_on_cpu_upstream_still_fails_with_cuda_stream_requires_cuda(runs):
    # First CUDA call of any CPU run: nemo/lightning/megatron_parallel.py init_model_parallel, during fit setup.
    _assert_canary(
        runs,
        "without_cuda_runtime_on_cpu",
        "cuda_runtime_on_cpu",
        "RuntimeError: torch.cuda.Stream requires CUDA support",
        "in init_model_parallel",
    )


# --- cuda_tensors_on_cpu ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@uses("all_on")
def test_cuda_tensors_on_cpu_makes_cpu_pretrain_work(runs):
    _assert_succeeded(runs, "all_on", "cuda_tensors_on_cpu", "PRETRAIN_DONE")


@pytest.mark.slow
@uses("without_cuda_tensors_on_cpu")
def test_without_cuda_tensors_on_cpu_upstream_still_fails_with_torch_not_compiled_with_cuda(runs):
    # With cuda_runtime_on_cpu on, the first hard-coded CUDA tensor is FP32Optimizer's `device='cuda'` loss scale,
    # built with the optimizer; this torch reports it as an AssertionError from torch.cuda._lazy_init.
    _assert_canary(
        runs,
        "without_cuda_tensors_on_cpu",
        "cuda_tensors_on_cpu",
        "Torch not compiled with CUDA enabled",
        "megatron/core/optimizer/optimizer.py",
    )


# --- resume_without_cuda_init ----------------------------------------------------------------------------------------


@pytest.mark.slow
@uses("all_on")
def test_resume_without_cuda_init_makes_cpu_resume_work(runs):
    _assert_succeeded(runs, "all_on", "resume_without_cuda_init", "PRETRAIN_DONE", "RESUME_DONE")
    assert "Restored all states from the checkpoint" in _log(runs, "all_on"), "the second train() did not resume"


@pytest.mark.slow
@uses("without_resume_without_cuda_init")
def test_without_resume_without_cuda_init_upstream_still_fails_with_fix_tensors_device_assertion(runs):
    log = _assert_canary(
        runs,
        "without_resume_without_cuda_init",
        "resume_without_cuda_init",
        "AssertionError: (False, False)",
        "in _fix_tensors_device",
        "nemo/lightning/io/pl.py",
    )
    assert "PRETRAIN_DONE" in log, f"the fresh pretrain should not need this patch\n{_tail(log)}"


# --- skip_llm_collection_import --------------------------------------------------------------------------------------


@pytest.mark.slow
@uses("all_on")
def test_skip_llm_collection_import_makes_train_save_and_resume_work(runs):
    _assert_succeeded(runs, "all_on", "skip_llm_collection_import", "PRETRAIN_DONE", "RESUME_DONE")


@pytest.mark.slow
@uses("without_skip_llm_collection_import")
def test_without_skip_llm_collection_import_upstream_still_fails_with_module_not_found(runs):
    # Which dependency of nemo.collections.llm is missing first depends on the environment ('rich' here).
    _assert_canary(
        runs,
        "without_skip_llm_collection_import",
        "skip_llm_collection_import",
        "ModuleNotFoundError: No module named",
        "in adjust_tensor_shapes_fn",
        "nemo/collections/llm/__init__.py",
    )


# --- context_yaml_without_nemo_run -----------------------------------------------------------------------------------


@pytest.mark.slow
@uses("all_on")
def test_context_yaml_without_nemo_run_makes_checkpoint_context_dump_work(runs):
    _assert_succeeded(runs, "all_on", "context_yaml_without_nemo_run", "PRETRAIN_DONE", "RESUME_DONE")
    assert "Failed to dump" not in _log(runs, "all_on")


@pytest.mark.slow
@uses("without_context_yaml_without_nemo_run")
def test_without_context_yaml_without_nemo_run_upstream_still_fails_with_failed_context_dump(runs):
    # NeMo's ModelCheckpoint catches the error and only logs it; the scenario turns the logged warning into a failure.
    _assert_canary(
        runs,
        "without_context_yaml_without_nemo_run",
        "context_yaml_without_nemo_run",
        "Failed to dump training context for checkpoint",
        "No module named 'nemo_run'",
    )


# --- progress_printer_rank0_collective -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.multirank
@uses("ddp_all_on")
def test_progress_printer_rank0_collective_makes_two_rank_training_work(runs):
    _assert_succeeded(runs, "ddp_all_on", "progress_printer_rank0_collective", "DONE", ranks=2)
    assert "Training epoch 0, iteration 2/2" in _log(runs, "ddp_all_on"), "rank 0 did not print every step"


@pytest.mark.slow
@pytest.mark.multirank
@uses("ddp_all_on", "ddp_without_progress_printer_rank0_collective")
def test_without_progress_printer_rank0_collective_upstream_still_fails_with_two_rank_hang(runs):
    reference = runs["ddp_all_on"]
    assert reference["rc"] == 0 and reference["seconds"] < HANG_TIMEOUT_S / 3, (
        f"inconclusive: the 2-rank run with every bridge on must finish well inside the {HANG_TIMEOUT_S} s hang "
        f"timeout, it took {reference['seconds']} s (rc {reference['rc']})"
    )
    job = "ddp_without_progress_printer_rank0_collective"
    result = runs[job]
    log = "\n".join(f"=== rank {r}\n{_log(runs, job, r)}" for r in range(2))
    symptom = f"2-rank run still running after {HANG_TIMEOUT_S} s (hang)"
    assert result["timed_out"] and OK not in log, _upstream_fixed(
        "progress_printer_rank0_collective", symptom, result["rc"], log
    )
    # The hang is after rank 0's printer ran (and so issued its rank-0-only timer all-gather).
    assert "Training epoch 0, iteration 0/2" in _log(runs, job, 0), _upstream_fixed(
        "progress_printer_rank0_collective", symptom + " after a printed step", result["rc"], log
    )


# --- numpy2_product_alias -------------------------------------------------------------------------------------------


def _np_product_callers_patched(log: str) -> bool:
    line = next((line for line in log.splitlines() if line.startswith("NP_PRODUCT_CALLERS_PATCHED ")), None)
    assert line is not None, f"the scenario did not report megatron's numpy references\n{_tail(log)}"
    return json.loads(line.removeprefix("NP_PRODUCT_CALLERS_PATCHED "))


@pytest.mark.slow
@pytest.mark.multirank
@uses("ddp_all_on")
def test_numpy2_product_alias_makes_two_rank_checkpoint_save_work_and_applies_only_where_numpy_lacks_product(runs):
    _assert_succeeded(runs, "ddp_all_on", "numpy2_product_alias", "DONE", ranks=2)
    for rank in range(2):
        patched = _np_product_callers_patched(_log(runs, "ddp_all_on", rank))
        assert patched == (not NUMPY_HAS_PRODUCT), (
            f"numpy {numpy.__version__} {'has' if NUMPY_HAS_PRODUCT else 'lacks'} `product`, but megatron's `np` "
            f"names were {'' if patched else 'not '}replaced on rank {rank}"
        )


@pytest.mark.slow
@pytest.mark.multirank
@pytest.mark.skipif(NUMPY_HAS_PRODUCT, reason="numpy 1 has `product`: the symptom needs numpy 2 (stack='gpu-node')")
@uses("ddp_without_numpy2_product_alias")
def test_without_numpy2_product_alias_upstream_still_fails_with_numpy_has_no_attribute_product(runs):
    job = "ddp_without_numpy2_product_alias"
    symptom = "AttributeError: module 'numpy' has no attribute 'product'"
    for rank in range(2):
        log = _log(runs, job, rank)
        fails = not runs[job]["timed_out"] and runs[job]["rc"] != 0 and OK not in log and symptom in log
        assert fails, _upstream_fixed("numpy2_product_alias", symptom, runs[job]["rc"], log)
        for where in ("megatron/core/dist_checkpointing/exchange_utils.py", "in _shard_size", "in save_checkpoint"):
            assert where in log, _upstream_fixed("numpy2_product_alias", f"{symptom} ({where})", runs[job]["rc"], log)


# --- distributed_optimizer_* (torch's Adam in Megatron's distributed optimizer) -----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("patch", DISTOPT_PATCHES)
@uses("distopt_all_on")
def test_distributed_optimizer_patch_makes_distributed_optimizer_resume_work(runs, patch):
    _assert_succeeded(runs, "distopt_all_on", patch, "PRETRAIN_DONE", "RESUME_DONE")
    log = _log(runs, "distopt_all_on")
    assert "Restored all states from the checkpoint" in log, f"the second train() did not resume\n{_tail(log)}"


@pytest.mark.slow
@uses("distopt_without_distributed_optimizer_state_before_first_step")
def test_without_distributed_optimizer_state_before_first_step_upstream_still_fails_with_step_assertion(runs):
    # DistributedOptimizer.state_dict, called by sharded_state_dict(is_loading=True) before Adam has any state.
    log = _assert_canary(
        runs,
        "distopt_without_distributed_optimizer_state_before_first_step",
        "distributed_optimizer_state_before_first_step",
        "AssertionError",
        "assert len(steps) == 1",
        "in state_dict",
        "megatron/core/optimizer/distrib_optimizer.py",
    )
    assert "PRETRAIN_DONE" in log, f"the fresh pretrain should not need this patch\n{_tail(log)}"


@pytest.mark.slow
@uses("distopt_without_distributed_optimizer_load_keeps_step")
def test_without_distributed_optimizer_load_keeps_step_upstream_still_fails_with_key_error_step(runs):
    log = _assert_canary(
        runs,
        "distopt_without_distributed_optimizer_load_keeps_step",
        "distributed_optimizer_load_keeps_step",
        "KeyError: 'step'",
        "in load_parameter_state_from_fully_reshardable",
        "in _set_main_param_and_optimizer_states",
    )
    assert "PRETRAIN_DONE" in log, f"the fresh pretrain should not need this patch\n{_tail(log)}"


@pytest.mark.slow
@uses("distopt_without_distributed_optimizer_step_per_param")
def test_without_distributed_optimizer_step_per_param_upstream_still_counts_one_step_per_parameter(runs):
    # Resumed at step 2, 2 more steps: the one shared step tensor is advanced by each of the model's 8 parameters
    # (4 Linear layers' weight and bias) at each step, 2 + 2 x 8 = 18, where torch's Adam counts 4.
    log = _assert_canary(
        runs,
        "distopt_without_distributed_optimizer_step_per_param",
        "distributed_optimizer_step_per_param",
        "Adam's step counts are [18.0]",
        "RESUME_DONE",
    )
    assert "Restored all states from the checkpoint" in log, f"the second train() did not resume\n{_tail(log)}"


# --- result_metric_to_same_device -----------------------------------------------------------------------------------


@pytest.mark.slow
@uses("log_all_on")
def test_result_metric_to_same_device_makes_a_repeated_log_update_the_metric_in_place(runs):
    _assert_succeeded(runs, "log_all_on", "result_metric_to_same_device", "SCENARIO_OK log_on_one_device")


@pytest.mark.slow
@uses("log_without_result_metric_to_same_device")
def test_without_result_metric_to_same_device_upstream_still_rebuilds_the_metric_on_every_log(runs):
    _assert_canary(runs, "log_without_result_metric_to_same_device", "result_metric_to_same_device", "REBUILT: ")


# --- one_logger_level_set_once ---------------------------------------------------------------------------------------


@pytest.mark.slow
@uses("one_logger_all_on")
def test_one_logger_level_set_once_keeps_disabled_telemetry_hooks_from_setting_a_logger_level(runs):
    _assert_succeeded(runs, "one_logger_all_on", "one_logger_level_set_once", "SCENARIO_OK disabled_one_logger_hooks")


@pytest.mark.slow
@uses("one_logger_without_one_logger_level_set_once")
def test_without_one_logger_level_set_once_upstream_still_sets_the_level_on_every_disabled_hook_call(runs):
    _assert_canary(runs, "one_logger_without_one_logger_level_set_once", "one_logger_level_set_once", "SET_LEVEL: ")


# --- cuda_free_calls_outside_the_cpu_mode ----------------------------------------------------------------------------


@pytest.mark.slow
@uses("cuda_free_all_on")
def test_cuda_free_calls_outside_the_cpu_mode_keeps_adamw_and_log_out_of_the_mode_with_the_same_results(runs):
    _assert_succeeded(runs, "cuda_free_all_on", "cuda_free_calls_outside_the_cpu_mode", "SCENARIO_OK cuda_free_calls")


@pytest.mark.slow
@uses("cuda_free_without_cuda_free_calls_outside_the_cpu_mode")
def test_without_cuda_free_calls_outside_the_cpu_mode_adamw_and_log_still_dispatch_through_the_mode(runs):
    job, patch = "cuda_free_without_cuda_free_calls_outside_the_cpu_mode", "cuda_free_calls_outside_the_cpu_mode"
    _assert_canary(runs, job, patch, "MODE_CALLS: ", "torch calls of AdamW.step", "torch calls of LightningModule.log")


# --- one_member_all_reduce_returns_at_once ---------------------------------------------------------------------------


@pytest.mark.slow
@uses("one_member_all_on")
def test_one_member_all_reduce_returns_at_once_keeps_training_steps_from_the_backend_with_upstreams_results(runs):
    job = "one_member_all_on"
    _assert_succeeded(runs, job, "one_member_all_reduce_returns_at_once", "SCENARIO_OK one_member_all_reduces")


@pytest.mark.slow
@uses("one_member_without_one_member_all_reduce_returns_at_once")
def test_without_one_member_all_reduce_returns_at_once_megatron_still_all_reduces_over_one_rank_every_step(runs):
    job, patch = "one_member_without_one_member_all_reduce_returns_at_once", "one_member_all_reduce_returns_at_once"
    _assert_canary(
        runs, job, patch, "ONE_MEMBER_ALL_REDUCES: ", "param_and_grad_buffer.py start_grad_sync", "clip_grads.py"
    )


# --- log_reads_training_step_signature_once, megatron_callbacks_read_signatures_once --------------------------------


@pytest.mark.slow
@uses("signatures_all_on")
@pytest.mark.parametrize("patch", SIGNATURE_PATCHES)
def test_signature_patch_makes_each_hook_method_signature_read_once_with_upstreams_answers(runs, patch):
    _assert_succeeded(runs, "signatures_all_on", patch, "SCENARIO_OK repeated_hook_signatures")


@pytest.mark.slow
@uses(*(f"signatures_without_{patch}" for patch in SIGNATURE_PATCHES))
@pytest.mark.parametrize("patch", SIGNATURE_PATCHES)
def test_without_a_signature_patch_upstream_still_reads_the_signature_on_every_call(runs, patch):
    log = _assert_canary(runs, f"signatures_without_{patch}", patch, SIGNATURE_PATCHES[patch])
    others = set(SIGNATURE_PATCHES.values()) - {SIGNATURE_PATCHES[patch]}
    assert not any(symptom in log for symptom in others), f"the other signature patch failed too\n{_tail(log)}"


# --- PatchSet --------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@uses("install_twice")
def test_installing_the_bridges_twice_runs_every_registered_patch_once(runs):
    from bionemo.example_model import bridges

    log = _log(runs, "install_twice")
    assert runs["install_twice"]["rc"] == 0, _tail(log)
    line = next(line for line in log.splitlines() if line.startswith("INSTALL_RESULT "))
    result = json.loads(line.removeprefix("INSTALL_RESULT "))
    registered = {set_name: list(patches.patches) for set_name, patches in bridges.PATCH_SETS.items()}
    assert result["registered"] == registered
    every = registered["all_devices"] + registered["cpu"]
    assert result["first"] == result["second"] == every
    assert result["calls"] == {name: 1 for name in every}
    assert result["function_modes"] == 1, "the CUDA-as-CPU TorchFunctionMode was pushed more than once"
