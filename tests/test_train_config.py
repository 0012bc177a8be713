"""The distillation config: validation with clear messages, JSON files and key=value overrides."""

from __future__ import annotations

import json

import pytest

from ptp.sampling import SamplingConfig
from ptp.train import DistillConfig
from ptp.train.config import parse_overrides


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_steps": 100, "eval_interval": 200}, "eval_interval .200. is beyond the run"),
        (
            {"max_steps": 100, "eval_interval": 0, "checkpoint_interval": 500},
            "checkpoint_interval .500. is beyond the run",
        ),
        ({"mode": "one_hot", "loss": "forward_kl"}, "needs mode categorical or mode_chain"),
        ({"chain_loss": 1}, "chain_loss must be true, false or null"),
        ({"mode": "two_hot"}, "mode must be one of"),
        ({"window_length": 0}, "window_length must be an integer >= 1"),
        ({"beta": 0}, "beta must be > 0"),
        ({"position_decay": 1.5}, "position_decay"),
        ({"warmup_steps": 50, "max_steps": 20, "eval_interval": 0, "checkpoint_interval": 0}, "warmup_steps"),
        ({"sampling": {"temperature": -1.0}}, "temperature"),
        ({"bin_order": "alphabetical"}, "bin_order must be one of"),
        ({"sampling": {"temperature": 0.7, "order": "probability"}}, "with bin_order, not inside sampling"),
        ({"sampling": SamplingConfig(order="probability")}, "with bin_order, not inside sampling"),
        ({"out_of_set": "ignore"}, "out_of_set"),
        ({"precision": "fp8"}, "precision"),
        ({"precision": "float32", "float32_bins": True}, "float32_bins is for a 16-bit run"),
        ({"fsdp": True, "float32_bins": True}, "does not support float32_bins"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_message(options, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(**options)


def test_the_objective_follows_the_mode():
    assert DistillConfig().objective == "cross_entropy"
    assert DistillConfig(mode="categorical").objective == "forward_kl"
    assert DistillConfig(mode="categorical", loss="reverse_kl").objective == "reverse_kl"
    assert DistillConfig(mode="mode_chain").objective == "forward_kl" and DistillConfig(mode="mode_chain").on_chain
    assert not DistillConfig(mode="independent").on_chain and DistillConfig(chain_loss=True).on_chain
    assert not DistillConfig(mode="mode_chain", chain_loss=False).on_chain


def test_a_file_with_overrides(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": "m", "window_length": 8, "learning_rate": 1e-4}))
    overrides = parse_overrides(
        [
            "window-length=12",
            "learning_rate=2",
            'target_modules=["q_proj"]',
            "out=/x/7",
            'sampling={"temperature": 0.5}',
            "run_dir=null",
        ]
    )
    config = DistillConfig.load(path, overrides)
    assert (config.model, config.window_length, config.learning_rate, config.out) == ("m", 12, 2.0, "/x/7")
    assert config.target_modules == ["q_proj"] and config.sampling_config().temperature == 0.5
    assert config.run_dir is None and config.run_path().name == "7.run"
    with pytest.raises(ValueError, match="expected key=value"):
        parse_overrides(["windows=3"])
    with pytest.raises(ValueError, match="unknown distillation config keys"):
        DistillConfig.load(None, {"nonsense": 1})
    with pytest.raises(FileNotFoundError):
        DistillConfig.load(tmp_path / "missing.json")
    path.write_text("[1]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        DistillConfig.load(path)


def test_the_sampling_configuration_may_be_given_as_an_object_in_vocabulary_order():
    config = DistillConfig(sampling=SamplingConfig(temperature=0.9, top_k=40), bin_order="probability")
    assert config.sampling_config() == SamplingConfig(temperature=0.9, top_k=40)


def test_the_drafter_settings_are_declared_once_and_every_run_config_takes_them_from_there():
    """A distillation run has every drafter setting, with the same default; ``ptp train`` takes its defaults from
    them; ``ptp evaluate``'s defaults are distill's."""
    import inspect
    from dataclasses import fields

    from ptp.model.config import DRAFTER_FIELDS, DrafterSettings, PTPConfig
    from ptp.train import evaluate_adapter
    from ptp.train.pretrain import PretrainConfig

    defaults = DrafterSettings()
    for config in (DistillConfig(), PTPConfig()):
        assert {name: getattr(config, name) for name in DRAFTER_FIELDS} == {
            f.name: getattr(defaults, f.name) for f in fields(DrafterSettings)
        }
    shared = ("window_length", "embedding", "embedding_size", "lora_rank")
    assert all(getattr(PretrainConfig(), name) == getattr(defaults, name) for name in shared)
    parameters = inspect.signature(evaluate_adapter).parameters
    for name in ("windows_per_row", "eval_fraction", "row_length", "batch_size", "loss", "position_decay", "seed"):
        assert parameters[name].default == getattr(DistillConfig(), name)
    with pytest.raises(ValueError, match="lora_dropout must be in"):
        DistillConfig(lora_dropout=1.5)  # checked where it is declared, for a run as for an adapter
