"""Specification: while training, Python's garbage collector runs on the step count, and afterwards as before."""

import gc
import weakref
from types import SimpleNamespace

from bionemo.example_model.gc_schedule import CollectEveryNSteps


class Node:
    """An object that can sit in a reference cycle and be watched through a weak reference."""

    other: "Node | None" = None


def a_cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_automatic_collection_is_off_while_training_and_as_before_after_it():
    trainer = SimpleNamespace(global_step=0)
    collect = CollectEveryNSteps(every_n_steps=4)
    assert gc.isenabled()
    collect.on_train_start(trainer, None)
    try:
        assert not gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        collect.on_train_end(trainer, None)
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_cycle_made_by_a_step_is_freed_at_the_next_multiple_of_n_steps_and_not_before():
    trainer = SimpleNamespace(global_step=0)
    collect = CollectEveryNSteps(every_n_steps=4)
    collect.on_train_start(trainer, None)
    try:
        cycle = a_cycle()
        for step in (1, 2, 3):
            trainer.global_step = step
            collect.on_train_batch_end(trainer, None)
            assert cycle() is not None, f"collected at step {step}"
        trainer.global_step = 4
        collect.on_train_batch_end(trainer, None)
        assert cycle() is None
    finally:
        collect.on_train_end(trainer, None)


def test_a_run_that_fails_still_turns_automatic_collection_back_on():
    trainer = SimpleNamespace(global_step=0)
    collect = CollectEveryNSteps(every_n_steps=4)
    collect.on_train_start(trainer, None)
    collect.on_exception(trainer, None, RuntimeError("a step failed"))
    assert gc.isenabled() and gc.get_freeze_count() == 0
