"""bionemo-example_model: the reference MNIST example for training BioNeMo2 models the NeMo2 / Megatron way.

Kept import-light on purpose: `bionemo-mnist --help` must answer without importing torch or NeMo.
"""
