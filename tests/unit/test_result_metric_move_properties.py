"""
Property: the `result_metric_to_same_device` bridge (bridges.all_devices) skips Lightning's move of a logged metric
only when that move has nothing to do. `_nothing_to_move(device)(obj)` is true exactly when Lightning's own search,
`apply_to_collection(obj, (Tensor, Metric), ...)`, finds no Metric and no tensor off `device`, for any nesting of
mappings, lists, tuples, dataclasses and leaves; and a real logged metric, kept in place or moved, ends as upstream's
move leaves it.
"""

import collections
import copy
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection, _ResultMetric
from lightning_utilities.core.apply_func import apply_to_collection
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric

from bionemo.example_model.bridges import all_devices
from bionemo.example_model.bridges.all_devices import _nothing_to_move

CPU, META = torch.device("cpu"), torch.device("meta")


@dataclasses.dataclass
class Holder:
    first: object
    second: object = None


Pair = collections.namedtuple("Pair", "first second")


@dataclasses.dataclass
class TaggedList(list):
    """A dataclass that is also a list: upstream searches its fields, not its items."""

    tag: object


def tagged_list(tag: object, items: list) -> TaggedList:
    obj = TaggedList(tag)
    obj.extend(items)
    return obj


@dataclasses.dataclass
class WithDerived:
    """A field outside `__init__`, which upstream's search leaves alone."""

    first: object
    derived: object = dataclasses.field(init=False, default=None)


def with_derived(first: object, derived: object) -> WithDerived:
    obj = WithDerived(first)
    obj.derived = derived
    return obj


@dataclasses.dataclass(frozen=True)
class Frozen:
    """Upstream refuses a frozen dataclass instance (ValueError)."""

    first: object


class Proxy:
    """Stands for the object it wraps, `__class__` included, while its type is its own (as wrapt's proxies do)."""

    def __init__(self, wrapped: object) -> None:
        self._wrapped = wrapped

    @property
    def __class__(self):  # noqa: D105
        return self._wrapped.__class__

    def __getattr__(self, name: str):
        if name == "_wrapped":  # not set yet: a copy being built (upstream deep-copies dataclasses)
            raise AttributeError(name)
        return getattr(self._wrapped, name)

    def __iter__(self):
        return iter(self._wrapped)

    def __len__(self) -> int:
        return len(self._wrapped)

    def __getitem__(self, key):
        return self._wrapped[key]


# Leaves include what the search does not enter: a dataclass *class* and a set holding a tensor.
IN_A_SET = frozenset({torch.zeros(1, device=META)})
LEAVES = st.sampled_from([True, 3, 2.5, "text", None, CPU, torch.float32, len, Holder, IN_A_SET])
TENSORS = st.sampled_from([CPU, META]).map(lambda device: torch.zeros(2, device=device))
NESTED = st.recursive(
    LEAVES | TENSORS | st.just(MeanMetric()),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from("abc"), inner, max_size=3)
        | st.dictionaries(st.sampled_from("abc"), inner, max_size=3).map(collections.OrderedDict)
        | inner.filter(lambda obj: not isinstance(obj, tuple)).map(Proxy)  # upstream cannot rebuild a namedtuple's
        | st.builds(Pair, inner, inner)
        | st.builds(Holder, inner, inner)
        | st.builds(tagged_list, inner, st.lists(inner, max_size=2))
        | st.builds(with_derived, inner, inner)
        | st.builds(Frozen, inner)
    ),
    max_leaves=8,
)


def lightning_would_move_something(obj: object, device: torch.device) -> bool:
    """Whether Lightning's move of `obj` to `device` does anything: moves a tensor or Metric, or refuses `obj`."""
    found = []
    try:
        apply_to_collection(obj, (torch.Tensor, Metric), lambda x: found.append(x) or x)
    except ValueError:  # a frozen dataclass: the bridge must leave the call (and its error) to upstream
        return True
    return any(isinstance(x, Metric) or x.device != device for x in found)


@settings(max_examples=300, deadline=None)
@given(obj=NESTED, device=st.sampled_from([CPU, META]))
def test_nothing_to_move_is_true_exactly_when_lightnings_move_finds_nothing_to_move(obj, device):
    assert _nothing_to_move(device)(obj) == (not lightning_would_move_something(obj, device))


def logged_metric(**log_kwargs) -> _ResultMetric:
    results = _ResultCollection(training=True)
    results.log("training_step", "loss", torch.tensor(0.5), batch_size=4, **log_kwargs)
    return results["training_step.loss"]


def states(metric: _ResultMetric) -> dict:
    return {name: getattr(metric, name) for name in metric._defaults}


@settings(max_examples=30, deadline=None)
@given(
    when=st.sampled_from([(True, False), (False, True), (True, True)]),
    reduce_fx=st.sampled_from(["mean", "sum", "max"]),
)
def test_a_logged_metric_on_its_device_holds_nothing_to_move_and_elsewhere_it_does(when, reduce_fx):
    metric = logged_metric(on_step=when[0], on_epoch=when[1], reduce_fx=reduce_fx)
    assert _nothing_to_move(CPU)(metric.__dict__)
    assert not _nothing_to_move(META)(metric.__dict__)
    moved = copy.deepcopy(metric)
    _ResultMetric.to(moved, META)  # whichever `to` is installed: from CPU to meta it is always upstream's move
    assert all(state.device == META for state in states(moved).values())
    assert not lightning_would_move_something(moved.__dict__, META) and moved.meta == metric.meta


UPSTREAM_TO = getattr(_ResultMetric.to, "__wrapped__", _ResultMetric.to)  # Lightning's, even if patched here already


def same_tensor_fields(a: _ResultMetric, b: _ResultMetric) -> bool:
    """The two metrics' states, on the same device with the same dtype and shape, and equal values off `meta`."""
    for name in a._defaults:
        x, y = getattr(a, name), getattr(b, name)
        if (x.device, x.dtype, x.shape) != (y.device, y.dtype, y.shape):
            return False
        if x.device != META and not torch.equal(x, y):
            return False
    return True


@settings(max_examples=30, deadline=None)
@given(
    when=st.sampled_from([(True, False), (False, True), (True, True)]),
    reduce_fx=st.sampled_from(["mean", "sum", "max"]),
    device=st.sampled_from([CPU, META]),
)
def test_with_the_bridge_a_logged_metric_ends_as_upstreams_move_leaves_it_and_stays_itself_in_place(
    when, reduce_fx, device
):
    metric = logged_metric(on_step=when[0], on_epoch=when[1], reduce_fx=reduce_fx)
    upstream = copy.deepcopy(metric)
    UPSTREAM_TO(upstream, device)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_ResultMetric, "to", _ResultMetric.to)  # put back when the context ends
        all_devices._result_metric_to_same_device()
        bridged = copy.deepcopy(metric)
        meta = bridged.meta
        assert bridged.to(device) is bridged
    assert same_tensor_fields(bridged, upstream) and bridged.meta == upstream.meta
    assert (bridged.meta is meta) == (device == CPU)  # kept in place where it is; moved (upstream's copy) elsewhere
