"""Config: JSON round trip, derived quantities, and the contradictions it refuses."""

import pytest

from tf_simclr import config as config_lib
from tf_simclr.config import Config, ConfigError


def _valid(**fields):
    return Config().replace(model_dir="/tmp/unused", **fields)


def test_json_round_trip_preserves_every_field():
    cfg = _valid(dataset="cifar10", image_size=32, width_multiplier=0.5,
                 train_steps=7, temperature=0.5, checkpoint="/x/ckpt-3",
                 train_mode="finetune", fine_tune_after_block=4)
    again = Config.from_json(cfg.to_json())
    assert again == cfg
    assert again.flat() == cfg.flat()


def test_from_json_rejects_unknown_fields():
    text = _valid().to_json().replace('"temperature"', '"temprature"')
    with pytest.raises(ConfigError, match="temprature"):
        Config.from_json(text)


def test_every_flag_name_belongs_to_exactly_one_group():
    names = config_lib.field_names()
    assert len(names) == len(set(names))
    for name in names:
        assert config_lib.group_of(name)


def test_official_derived_quantities():
    # CIFAR-10 at batch 512 for 100 epochs: 9766 steps (official logs, issue #182).
    cfg = _valid(train_batch_size=512, train_epochs=100)
    assert config_lib.train_steps(cfg, 50000) == 9766
    assert config_lib.epoch_steps(cfg, 50000) == 98
    assert config_lib.checkpoint_steps(cfg, 50000) == 98
    assert config_lib.train_steps(cfg.replace(train_steps=5), 50000) == 5
    assert config_lib.eval_steps(cfg.replace(eval_batch_size=256), 10000) == 40
    assert config_lib.warmup_steps(cfg.replace(warmup_epochs=10), 50000) == 976
    # 0.3 linear and 0.075 sqrt are the same LR at batch 4096 (README).
    big = cfg.replace(train_batch_size=4096)
    assert config_lib.scaled_learning_rate(big.replace(learning_rate=0.3)) == pytest.approx(4.8)
    assert config_lib.scaled_learning_rate(
        big.replace(learning_rate=0.075, learning_rate_scaling="sqrt")) == pytest.approx(4.8)


@pytest.mark.parametrize("fields, message", [
    (dict(train_mode="finetune"), "needs --checkpoint"),
    (dict(train_mode="finetune", checkpoint="/c", finetune_from_scratch=True), "contradicts"),
    (dict(fine_tune_after_block=2), "applies to --train_mode=finetune"),
    (dict(image_size=8), "--image_size=8 is out of range"),
    (dict(crop_min_area=0.0), "--crop_min_area=0.0 is out of range; expected a value > 0.0"),
    (dict(crop_min_area=1.5), "--crop_min_area=1.5 is out of range"),
    (dict(resnet_depth=42), "--resnet_depth=42 is not supported"),
    (dict(optimizer="sgd"), "--optimizer='sgd' is not supported"),
    (dict(proj_head_mode="linear", ft_proj_selector=3), "--ft_proj_selector=3"),
    (dict(temperature=0.0), "--temperature=0.0"),
    (dict(train_steps=0, train_epochs=0), "nothing to train"),
    (dict(dataset="image_folder"), "needs --data_dir"),
    (dict(use_tpu=True, cpu_replicas=2), "contradicts --cpu_replicas"),
    (dict(precision="mixed_float16"), "mixed_float16 is not supported with --optimizer=lars"),
    (dict(deterministic=True, use_tpu=True), "--deterministic is not supported with --use_tpu"),
    (dict(learning_rate=float("nan")), "--learning_rate=nan is not a finite number"),
    (dict(weight_decay=float("inf")), "--weight_decay=inf is not a finite number"),
    (dict(temperature=float("-inf")), "--temperature=-inf is not a finite number"),
    (dict(label_fraction=float("nan")), "--label_fraction=nan is not a finite number"),
])
def test_contradictions_are_refused_with_the_bad_value(fields, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        _valid(**fields).validate()


def test_missing_model_dir_is_refused():
    with pytest.raises(ConfigError, match="--model_dir is not set"):
        Config().validate()


def test_save_and_load(tmp_path):
    cfg = _valid(dataset="fashion_mnist")
    path = config_lib.save(cfg, str(tmp_path))
    assert path.endswith("config.json")
    assert config_lib.load(str(tmp_path)) == cfg
    with pytest.raises(ConfigError, match="does not exist"):
        config_lib.load(str(tmp_path / "missing"))


def test_every_flag_field_declares_its_help_and_its_choices_are_enforced():
    for field in config_lib.flag_fields():
        assert field.metadata["help"].strip(), field.name
        if field.metadata["choices"]:
            assert field.default in field.metadata["choices"], field.name
            bad = "nope" if field.type is str else -7
            with pytest.raises(ConfigError, match=f"--{field.name}={bad!r} is not supported"):
                _valid(**{field.name: bad}).validate()
