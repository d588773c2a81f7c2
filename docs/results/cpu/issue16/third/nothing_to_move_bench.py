import time, torch, sys
import bionemo.example_model
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection
from bionemo.example_model.bridges.all_devices import _nothing_to_move
rc = _ResultCollection(training=True)
rc.log("training_step", "train_loss", torch.tensor(1.0), on_step=True, on_epoch=True, batch_size=4)
m = rc["training_step.train_loss"]
f = _nothing_to_move(torch.device("cpu"))
f(m.__dict__)
n=5000; s=time.perf_counter()
for _ in range(n): f(m.__dict__)
print(f"nothing_to_move: {(time.perf_counter()-s)/n*1e6:.1f} us per call", f(m.__dict__))
import collections
cnt=collections.Counter()
def walk(o, d=0):
    cnt[type(o).__name__]+=1
    if isinstance(o, dict):
        for v in o.values(): walk(v,d+1)
    elif isinstance(o,(list,tuple)):
        for v in o: walk(v,d+1)
    elif hasattr(o,'__dataclass_fields__'):
        for k in o.__dataclass_fields__: walk(getattr(o,k),d+1)
walk(m.__dict__)
print(cnt.most_common())
print(list(m.__dict__.keys()))
