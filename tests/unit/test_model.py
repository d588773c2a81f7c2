"""Specification of `bionemo.example_model.model` and `.config`: the models' shapes and structure, and which model
and loss each stage's config builds."""

import pytest
import torch
from megatron.core.enums import ModelType
from megatron.core.transformer.module import MegatronModule

from bionemo.example_model.config import (
    ExampleFineTuneBothConfig,
    ExampleFineTuneConfig,
    ExampleGenericConfig,
    PretrainConfig,
)
from bionemo.example_model.losses import (
    ClassifierLossReduction,
    MSELossReduction,
    MSEPlusClassifierLossReduction,
)
from bionemo.example_model.model import (
    ExampleFineTuneBothModel,
    ExampleFineTuneModel,
    ExampleModel,
    ExampleModelTrunk,
)

TRUNK = {
    "linear1.weight": (64, 784),
    "linear1.bias": (64,),
    "linear2.weight": (3, 64),
    "linear2.bias": (3,),
}
DECODER = {
    "linear3.weight": (64, 3),
    "linear3.bias": (64,),
    "linear4.weight": (784, 64),
    "linear4.bias": (784,),
}
CLASSIFIER = {"digit_classifier.weight": (10, 3), "digit_classifier.bias": (10,)}

EXPECTED_PARAMETERS = {
    ExampleModelTrunk: TRUNK,
    ExampleModel: {**TRUNK, **DECODER},
    ExampleFineTuneBothModel: {**TRUNK, **DECODER, **CLASSIFIER},
    ExampleFineTuneModel: {**TRUNK, **CLASSIFIER},
}
MODELS = list(EXPECTED_PARAMETERS)


def build(model_cls):
    """A model built on the same config type the stages use (a Megatron TransformerConfig)."""
    return model_cls(PretrainConfig())


def images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def param_shapes(model) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


# --------------------------------------------------------------------------------------------------------------------
# Structure


@pytest.mark.parametrize("model_cls", MODELS, ids=lambda c: c.__name__)
def test_parameters_are_exactly_the_expected_layers_and_shapes(model_cls):
    assert param_shapes(build(model_cls)) == EXPECTED_PARAMETERS[model_cls]


@pytest.mark.parametrize("model_cls", MODELS, ids=lambda c: c.__name__)
def test_every_model_is_a_megatron_module_with_the_encoder_or_decoder_type(model_cls):
    model = build(model_cls)
    assert isinstance(model, MegatronModule)
    assert isinstance(model, ExampleModelTrunk)
    assert model.model_type == ModelType.encoder_or_decoder
    assert model.set_input_tensor(torch.zeros(1)) is None  # the pipeline hook exists and is a no-op


def test_the_classifier_only_model_has_no_decoder():
    model = build(ExampleFineTuneModel)
    assert hasattr(model, "digit_classifier")
    assert not hasattr(model, "linear3")
    assert not hasattr(model, "linear4")
    assert not isinstance(model, ExampleModel)


def test_the_both_heads_model_keeps_the_decoder_and_adds_the_classifier():
    model = build(ExampleFineTuneBothModel)
    assert isinstance(model, ExampleModel)
    assert isinstance(model.digit_classifier, torch.nn.Linear)
    assert isinstance(model.linear3, torch.nn.Linear) and isinstance(model.linear4, torch.nn.Linear)


def test_models_keep_the_config_they_were_built_with():
    config = PretrainConfig()
    assert ExampleModel(config).config is config


# --------------------------------------------------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("batch", [1, 7])
def test_the_trunk_encodes_a_batch_to_a_3d_latent_code(batch):
    model = build(ExampleModelTrunk)
    z = model(images(batch))
    assert z.shape == (batch, 3)
    assert z.dtype == torch.float32


@pytest.mark.parametrize("batch", [1, 7])
def test_the_autoencoder_returns_a_flat_reconstruction_and_the_latent_code(batch):
    model = build(ExampleModel)
    x = images(batch)
    out = model(x)
    assert set(out) == {"x_hat", "z"}
    assert out["x_hat"].shape == (batch, 784)
    assert out["z"].shape == (batch, 3)
    torch.testing.assert_close(out["z"], model.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(out["x_hat"], model.decode(out["z"]), rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 7])
def test_the_both_heads_model_adds_digit_logits_to_the_autoencoder_output(batch):
    model = build(ExampleFineTuneBothModel)
    x = images(batch)
    out = model(x)
    assert set(out) == {"x_hat", "z", "digit_logits"}
    assert out["x_hat"].shape == (batch, 784)
    assert out["z"].shape == (batch, 3)
    assert out["digit_logits"].shape == (batch, 10)
    torch.testing.assert_close(out["digit_logits"], model.digit_classifier(out["z"]), rtol=0, atol=0)
    torch.testing.assert_close(out["x_hat"], model.decode(out["z"]), rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 7])
def test_the_classifier_model_returns_the_digit_logits_tensor_itself_as_the_original(batch):
    model = build(ExampleFineTuneModel)
    x = images(batch)
    out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (batch, 10)
    torch.testing.assert_close(out, model.digit_classifier(model.encode(x)), rtol=0, atol=0)


def test_images_may_come_flat_or_as_1x28x28():
    model = build(ExampleModel)
    x = images(4)
    torch.testing.assert_close(model(x.flatten(start_dim=1))["z"], model(x)["z"], rtol=0, atol=0)


def test_the_encoder_is_the_784_64_3_mlp_with_a_relu():
    model = build(ExampleModelTrunk)
    x = images(3)
    expected = model.linear2.weight @ torch.relu(model.linear1.weight @ x.flatten(1).T + model.linear1.bias[:, None])
    torch.testing.assert_close(model(x), (expected + model.linear2.bias[:, None]).T)


# --------------------------------------------------------------------------------------------------------------------
# Distributed-checkpoint state


@pytest.mark.usefixtures("megatron_single_process")
@pytest.mark.parametrize("model_cls", MODELS, ids=lambda c: c.__name__)
def test_sharded_state_dict_keys_are_the_plain_parameter_names(model_cls):
    """NeMo adds its `module.` prefix itself when saving; the model's own keys carry no prefix."""
    model = build(model_cls)
    sharded = model.sharded_state_dict()
    assert set(sharded) == set(EXPECTED_PARAMETERS[model_cls])
    for name, tensor in sharded.items():
        assert tensor.key == name
        assert tuple(tensor.global_shape) == EXPECTED_PARAMETERS[model_cls][name]
        assert tensor.data.data_ptr() == model.get_parameter(name).data_ptr()  # the live parameter, not a copy


# --------------------------------------------------------------------------------------------------------------------
# Configs

CONFIGS = [
    (ExampleGenericConfig, ExampleModel, MSELossReduction),
    (PretrainConfig, ExampleModel, MSELossReduction),
    (ExampleFineTuneBothConfig, ExampleFineTuneBothModel, MSEPlusClassifierLossReduction),
    (ExampleFineTuneConfig, ExampleFineTuneModel, ClassifierLossReduction),
]


@pytest.mark.parametrize(("config_cls", "model_cls", "loss_cls"), CONFIGS, ids=lambda c: getattr(c, "__name__", ""))
def test_each_config_builds_its_model_and_names_its_loss(config_cls, model_cls, loss_cls):
    config = config_cls()
    model = config.configure_model()
    assert type(model) is model_cls
    assert model.config is config
    assert config.get_loss_reduction_class() is loss_cls


@pytest.mark.parametrize("config_cls", [c for c, _, _ in CONFIGS], ids=lambda c: c.__name__)
def test_configs_default_to_loading_every_weight_as_the_original(config_cls):
    config = config_cls()
    assert config.initial_ckpt_path is None
    assert config.initial_ckpt_skip_keys_with_these_prefixes == []


def test_config_default_skip_lists_are_not_shared_between_instances():
    first, second = ExampleFineTuneConfig(), ExampleFineTuneConfig()
    first.initial_ckpt_skip_keys_with_these_prefixes.append("linear1")
    assert second.initial_ckpt_skip_keys_with_these_prefixes == []


def test_configs_without_a_checkpoint_build_freshly_initialised_models():
    torch.manual_seed(0)
    first = PretrainConfig().configure_model()
    second = PretrainConfig().configure_model()
    assert not torch.equal(first.linear1.weight, second.linear1.weight)
