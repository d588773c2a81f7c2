"""The original example's import path: `bionemo.example_model.lightning.lightning_basic`."""
