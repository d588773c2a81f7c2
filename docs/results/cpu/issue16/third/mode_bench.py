import time, torch
from torch.overrides import TorchFunctionMode
from bionemo.example_model.bridges.cpu import cuda_as_cpu
torch.set_num_threads(1)
a = torch.ones(10); b = torch.ones(10)
def loop(n=20000):
    s = time.perf_counter()
    for _ in range(n):
        torch.add(a, b); a.mul(2); a.sum(); torch.zeros(3, device="cpu")
    return (time.perf_counter() - s) / n / 4 * 1e6
class Empty(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))
for r in range(3):
    base = loop()
    with Empty(): empty = loop()
    with cuda_as_cpu(): ours = loop()
    print(f"per call: none {base:.2f} us, empty mode {empty:.2f} us, cuda_as_cpu {ours:.2f} us")
