"""
The models: a 784-64-3 trunk, the autoencoder built on it, and the two finetuning variants.

They are `MegatronModule`s so that NeMo2 can wrap them in Megatron's DDP, shard their state for distributed
checkpoints, and (in bf16-mixed) wrap them in Megatron's Float16Module. Their plain `nn.Linear` layers are saved as
replicated tensors by `MegatronModule.sharded_state_dict`.
"""

from typing import Sequence, TypedDict

from megatron.core.enums import ModelType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from torch import Tensor, nn

__all__: Sequence[str] = (
    "ExampleFineTuneBothModel",
    "ExampleFineTuneModel",
    "ExampleFineTuneOutput",
    "ExampleModel",
    "ExampleModelOutput",
    "ExampleModelTrunk",
)

IMAGE_PIXELS = 28 * 28
HIDDEN = 64
LATENT = 3
NUM_DIGITS = 10


class ExampleModelOutput(TypedDict):
    """Autoencoder output: the reconstruction (flattened, [batch, 784]) and the latent code ([batch, 3])."""

    x_hat: Tensor
    z: Tensor


class ExampleFineTuneOutput(ExampleModelOutput):
    """Autoencoder-plus-classifier output: `ExampleModelOutput` and the digit logits ([batch, 10])."""

    digit_logits: Tensor


class ExampleModelTrunk(MegatronModule):
    """The encoder shared by every stage: 784 -> 64 -> 3."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        # Megatron's schedules read model_type to decide how to pass tensors between pipeline stages.
        self.model_type = ModelType.encoder_or_decoder
        self.vp_stage = None  # NeMo reads it to place the model in a virtual pipeline; there is none
        self.linear1 = nn.Linear(IMAGE_PIXELS, HIDDEN)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(HIDDEN, LATENT)

    def encode(self, x: Tensor) -> Tensor:
        """Latent code of a batch of images of any shape [batch, ...] with 784 values each."""
        return self.linear2(self.relu(self.linear1(x.flatten(start_dim=1))))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.encode(x)

    def set_input_tensor(self, input_tensor: Tensor | None) -> None:
        """Pipeline-parallel hook required by Megatron; a single-stage model has nothing to receive."""


class ExampleModel(ExampleModelTrunk):
    """The pretraining autoencoder: the trunk plus a 3 -> 64 -> 784 decoder."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.linear3 = nn.Linear(LATENT, HIDDEN)
        self.relu2 = nn.ReLU()
        self.linear4 = nn.Linear(HIDDEN, IMAGE_PIXELS)

    def decode(self, z: Tensor) -> Tensor:  # noqa: D102
        return self.linear4(self.relu2(self.linear3(z)))

    def forward(self, x: Tensor) -> ExampleModelOutput:  # noqa: D102
        z = self.encode(x)
        return {"x_hat": self.decode(z), "z": z}


class ExampleFineTuneBothModel(ExampleModel):
    """The autoencoder plus a digit classifier on the latent code (trains reconstruction and classification)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.digit_classifier = nn.Linear(LATENT, NUM_DIGITS)

    def forward(self, x: Tensor) -> ExampleFineTuneOutput:  # noqa: D102
        z = self.encode(x)
        return {"x_hat": self.decode(z), "z": z, "digit_logits": self.digit_classifier(z)}


class ExampleFineTuneModel(ExampleModelTrunk):
    """
    The trunk plus the `digit_classifier` head, decoder dropped: the model the main job finetunes. Its output is the
    digit logits tensor itself ([batch, 10]), as in the original example: a Megatron model may return any type its
    loss reduction understands."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.digit_classifier = nn.Linear(LATENT, NUM_DIGITS)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.digit_classifier(self.encode(x))
