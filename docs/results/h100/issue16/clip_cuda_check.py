# Ran on nvidia-h100-x1 against commit 7d91457, whose `grad_clip_without_host_sync` bridge has since been removed
# (docs/PERFORMANCE.md, issue 16): the record of why. `PYTHONPATH=src:/tmp/site python3 THIS` on a GPU node.
"""On a CUDA device: the bridge's clipping against megatron-core's own functions, bit for bit, over many draws."""
import json, math, os, sys
import torch, torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", "29561")
dist.init_process_group("nccl", rank=0, world_size=1)
from megatron.core.optimizer import clip_grads
from megatron.core.utils import local_multi_tensor_l2_norm
from bionemo.example_model.bridges.all_devices import clip_grad_by_total_norm_fp32_on_device, grad_norm_fp32_on_device

SHAPES = [(64, 784), (64,), (784, 64), (784,), (10, 64), (10,)]
out = {"l2_norm_impl_is_local": clip_grads.l2_norm_impl is local_multi_tensor_l2_norm, "device": torch.cuda.get_device_name()}
counts = {"clipped": [0, 0], "unclipped": [0, 0], "norm_ulp_off": 0, "norm_more_off": 0}
for seed in range(3000):
    g = torch.Generator(device="cuda").manual_seed(seed)
    scale = [1e-4, 1e-3, 3e-3, 1e-2, 1e-1, 1.0, 10.0][seed % 7]
    def make():
        ps = []
        g.manual_seed(seed)
        for s in SHAPES:
            p = torch.nn.Parameter(torch.zeros(s, device="cuda")); p.grad = torch.randn(s, generator=g, device="cuda") * scale; ps.append(p)
        return ps
    ours, theirs = make(), make()
    n_theirs = clip_grads.get_grad_norm_fp32([p.grad for p in theirs])
    clip_grads.clip_grad_by_total_norm_fp32(theirs, 1.0, n_theirs)
    n_ours = grad_norm_fp32_on_device([p.grad for p in ours])
    clip_grad_by_total_norm_fp32_on_device(ours, 1.0, n_ours)
    same = all(torch.equal(a.grad.view(torch.int32), b.grad.view(torch.int32)) for a, b in zip(ours, theirs))
    key = "clipped" if n_theirs > 1.0 else "unclipped"
    counts[key][0] += 1; counts[key][1] += (not same)
    d = abs(n_ours.item() - n_theirs)
    if d: counts["norm_ulp_off" if d <= math.ulp(n_theirs) else "norm_more_off"] += 1
out["counts (draws, grads differing)"] = counts
print(json.dumps(out, indent=1))
