"""Config loading: YAML + notebook parameters + dotted overrides, typed and strict."""

import pytest

from workbench.config import (ConfigError, bundled_configs, config_hash, load_config, parse_overrides,
                              setting_hash, to_dict)


def test_both_override_spellings_are_accepted():
    assert parse_overrides(["--training.batch_size", "64", "models.margin=0.2", "--training.resume"]) == [
        "training.batch_size=64", "models.margin=0.2", "training.resume=true"]
    cfg = load_config(overrides=["--training.batch_size", "64", "models.margin=0.2"])
    assert cfg.training.batch_size == 64 and cfg.models.margin == 0.2


def test_seed_argument_names_exist():
    cfg = load_config(overrides=["data.img_df=a.csv", "data.text_df=b.csv", "data.triplet_csv=t.csv",
                                 "data.model_save_path=out", "training.save_freq=2", "training.num_workers=2",
                                 "training.random_seed=7", "models.text_model=bert", "models.img_model=resnet50"])
    assert (cfg.data.img_df, cfg.data.triplet_csv, cfg.training.random_seed) == ("a.csv", "t.csv", 7)


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ConfigError, match="training.batch_size"):
        load_config(overrides=["training.batchsize=3"])


def test_wrong_type_is_rejected_with_the_key():
    with pytest.raises(ConfigError, match="training.batch_size"):
        load_config(overrides=["training.batch_size=many"])


def test_yaml_file_with_unknown_key_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  learnin_rate: 0.1\n")
    with pytest.raises(ConfigError, match="training.learning_rate"):
        load_config(str(path))


def test_notebook_parameter_wins_over_file_and_override_wins_over_both():
    cfg = load_config("tiny", params={"seed": 5, "device": None})
    assert cfg.training.random_seed == 5 and cfg.training.device == "cpu"  # None leaves the file's value
    cfg = load_config("tiny", overrides="training.random_seed=9", params={"seed": 5})
    assert cfg.training.random_seed == 9


def test_method_params_are_free_form_and_interpolation_works(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("method:\n  name: cgns\n  params:\n    k: 8\n    dim: ${models.embed_dim}\n")
    cfg = load_config(str(path))
    assert cfg.method.params == {"k": 8, "dim": 256}


def test_unknown_bundled_config_lists_the_known_ones():
    with pytest.raises(ConfigError, match="tiny"):
        load_config("nope")
    assert {"demo", "tiny"} <= set(bundled_configs())


def test_setting_hash_ignores_seed_and_device_but_not_objective():
    a = load_config("tiny")
    b = load_config("tiny", overrides=["training.random_seed=99", "training.device=cuda", "run_dir=/x"])
    c = load_config("tiny", overrides=["models.margin=0.1"])
    assert setting_hash(a) == setting_hash(b) != setting_hash(c)
    assert config_hash(a) != config_hash(b)
    assert to_dict(a)["training"]["batch_size"] == 8
