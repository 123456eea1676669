"""Config loading: every shipped config, profiles, overrides, and errors that name file and key."""
from __future__ import annotations

import pytest

from annotassist.config import Config, dump_config, from_dict, load_config, voc_palette
from annotassist.errors import ConfigError

from conftest import CONFIGS, config_from_file, list_config_dict, make_config, write_yaml

ALL_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def test_configs_folder_is_not_empty():
    assert {p.stem for p in ALL_CONFIGS} >= {"camvid", "cityscapes", "demo", "voc"}


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.source == str(path)
    assert cfg.num_classes == len(cfg.dataset.classes) >= 2
    assert len(cfg.palette()) == cfg.num_classes
    assert cfg.dataset.ignore_index == 255 or cfg.dataset.ignore_index >= cfg.num_classes


@pytest.mark.parametrize("path", [p for p in ALL_CONFIGS if "cpu" in (load_config(p).profiles or {})],
                         ids=lambda p: p.stem)
def test_every_cpu_profile_loads(path):
    base = load_config(path)
    cpu = load_config(path, profile="cpu")
    assert cpu.model.backbone == "efficientnet_lite0"
    assert cpu.train.max_iters > 0
    assert cpu.train.num_workers == 1
    # untouched keys keep the file's values
    assert cpu.dataset.classes == base.dataset.classes
    assert cpu.train.seed == base.train.seed


def test_known_values_of_shipped_configs():
    camvid = config_from_file("camvid")
    assert camvid.num_classes == 11 and camvid.dataset.ignore_index == 11
    assert camvid.dataset.layout == "list" and camvid.pool.initial_labeled == 16
    assert camvid.palette()[3] == (128, 64, 128)
    voc = config_from_file("voc")
    assert voc.num_classes == 21 and voc.dataset.layout == "voc"
    assert voc.palette() == voc_palette(21)
    assert voc.palette()[:3] == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    city = config_from_file("cityscapes")
    assert city.num_classes == 19 and city.train.criterion == "ohem" and city.train.eval_mode == "sliding"
    demo = config_from_file("demo")
    assert demo.dataset.layout == "synthetic" and demo.num_classes == 6


def test_cpu_profile_values_on_camvid():
    cfg = config_from_file("camvid", profile="cpu")
    assert cfg.train.image_scale == 0.5
    assert cfg.train.crop_size == 160
    assert cfg.train.batch_size == 4
    assert cfg.train.lr == 0.01
    assert cfg.acquire.num_workers == 1
    assert cfg.train.epochs == 80  # not in the profile
    # the CPU profile's cheap shape; the published one stays the default for GPU recipes
    assert (cfg.model.decoder, cfg.region.width, cfg.dssn.labeled_forward) == ("light", 32, "separate")
    full = config_from_file("camvid")
    assert (full.model.decoder, full.region.width, full.dssn.labeled_forward) == ("deeplabv3plus", 64, "joint")


def test_set_overrides():
    cfg = config_from_file("camvid", overrides=["train.epochs=3", "model.backbone=resnet50",
                                                "dataset.classes=[a, b, c]", "dataset.palette=[]",
                                                "dataset.ignore_index=255", "train.amp=off"])
    assert cfg.train.epochs == 3
    assert cfg.model.backbone == "resnet50"
    assert cfg.dataset.classes == ["a", "b", "c"]
    assert cfg.train.amp == "off"
    assert len(cfg.palette()) == 3


def test_override_wins_over_profile():
    cfg = config_from_file("camvid", profile="cpu", overrides=["train.max_iters=7", "train.lr=0.5"])
    assert cfg.train.max_iters == 7
    assert cfg.train.lr == 0.5
    assert cfg.model.backbone == "efficientnet_lite0"


def test_override_types_are_checked_and_converted():
    cfg = make_config(overrides=["train.lr=1", "train.channels_last=true", "dataset.name=123"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.channels_last is True
    assert cfg.dataset.name == "123"
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer"):
        make_config(overrides=["train.epochs=many"])


def test_scientific_notation_is_a_number(tmp_path):
    # PyYAML reads 1e-4 (no dot) as a string; a config writing lr: 1e-4 must still load as a number
    p = tmp_path / "c.yaml"
    p.write_text("dataset:\n  classes: [a, b]\ntrain:\n  weight_decay: 1e-4\n  lr: 5E-3\n")
    cfg = load_config(p, overrides=["region.lr=1e-5"])
    assert cfg.train.weight_decay == pytest.approx(1e-4)
    assert cfg.train.lr == pytest.approx(5e-3)
    assert cfg.region.lr == pytest.approx(1e-5)
    with pytest.raises(ConfigError, match=r"train\.lr must be a number"):
        load_config(p, overrides=["train.lr=abc"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        make_config(overrides=["train.epochs"])
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        make_config(overrides=["train.epochs=[1, 2"])


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    data = list_config_dict()
    data["train"] = {"epoch": 3}
    p = write_yaml(tmp_path / "typo.yaml", data)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "'train.epoch'" in msg
    assert "did you mean 'train.epochs'?" in msg


def test_unknown_section_and_override_key():
    data = list_config_dict()
    data["trian"] = {"epochs": 3}
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'\?"):
        from_dict(data)
    with pytest.raises(ConfigError, match=r"unknown key 'model\.backbon'; did you mean 'model\.backbone'\?"):
        make_config(overrides=["model.backbon=resnet50"])
    # nothing close: the known keys are listed instead
    with pytest.raises(ConfigError, match=r"unknown key 'pool\.zzzzzz'; known keys: initial_labeled, seed"):
        make_config(overrides=["pool.zzzzzz=1"])


def test_wrong_type_names_the_key(tmp_path):
    data = list_config_dict()
    data["train"] = {"lr": "abc"}
    p = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "train.lr must be a number, got 'abc'" in msg


@pytest.mark.parametrize("section, key, value, expect", [
    ("train", "epochs", 2.5, r"train\.epochs must be an integer"),
    ("train", "epochs", True, r"train\.epochs must be an integer"),
    ("train", "freeze_bn", "yes", r"train\.freeze_bn must be true or false"),
    ("train", "scale_range", 0.5, r"train\.scale_range must be a list of a number"),
    ("train", "scale_range", [0.5, "x"], r"train\.scale_range\[1\] must be a number"),
    ("dataset", "classes", "abc", r"dataset\.classes must be a list of a string"),
    ("profiles", None, 3, r"profiles must be a mapping"),
])
def test_wrong_types(section, key, value, expect):
    data = list_config_dict()
    if key is None:
        data[section] = value
    else:
        data.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=expect):
        from_dict(data)


def test_section_that_is_not_a_mapping():
    data = list_config_dict()
    data["train"] = 3
    with pytest.raises(ConfigError, match=r"train must be a mapping of settings, got 3"):
        from_dict(data)


def test_bad_literal_value(tmp_path):
    data = list_config_dict()
    data["model"] = {"backbone": "resnet18", "output_stride": 32}
    p = write_yaml(tmp_path / "lit.yaml", data)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "model.backbone must be one of 'resnet50', 'resnet101', 'efficientnet_lite0', got 'resnet18'" in msg
    assert "model.output_stride must be one of 8, 16, got 32" in msg
    # a Literal of ints does not take a string or a float that happens to compare equal
    with pytest.raises(ConfigError, match=r"model\.output_stride"):
        make_config(overrides=["model.output_stride='16'"])
    with pytest.raises(ConfigError, match=r"model\.output_stride"):
        make_config(overrides=["model.output_stride=16.0"])
    assert make_config(overrides=["model.output_stride=8"]).model.output_stride == 8


def test_invalid_yaml_reports_file_and_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("dataset:\n  classes: [a, b]\ntrain:\n  epochs: 3\n  lr: [0.1\n  batch_size: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:")
    assert "not valid YAML" in msg
    line = int(msg[len(str(p)) + 1:].split(":")[0])
    assert 5 <= line <= 7


def test_invalid_yaml_tab_indent(tmp_path):
    p = tmp_path / "tabs.yaml"
    p.write_text("train:\n\tepochs: 3\n")
    with pytest.raises(ConfigError, match=rf"{p}:2: not valid YAML"):
        load_config(p)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"config file not found: {p}"):
        load_config(p)


def test_top_level_not_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=rf"{p}: the top level must be a mapping"):
        load_config(p)


def test_all_problems_reported_at_once(tmp_path):
    data = list_config_dict()
    data["train"] = {"lr": "abc", "epochz": 3, "amp": "fp16"}
    data["model"] = {"backbone": "vgg"}
    p = write_yaml(tmp_path / "many.yaml", data)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "4 problem(s)" in msg
    for part in ("train.lr", "'train.epochz'", "train.amp", "model.backbone"):
        assert part in msg, part


def test_semantic_checks():
    with pytest.raises(ConfigError, match="dataset.classes is empty"):
        from_dict({})
    with pytest.raises(ConfigError, match=r"dataset\.ignore_index 1 is also a class id"):
        make_config(overrides=["dataset.ignore_index=1"])
    with pytest.raises(ConfigError, match=r"dataset\.palette has 1 colours for 6 classes"):
        make_config(overrides=["dataset.palette=[[1, 2, 3]]"])
    with pytest.raises(ConfigError) as e:
        make_config(overrides=["train.lr=-1", "acquire.budget=0", "train.scale_range=[2.0, 1.0]"])
    msg = str(e.value)
    assert "train.lr must be positive" in msg
    assert "acquire.budget must be at least 1" in msg
    assert "train.scale_range" in msg


def test_profile_that_does_not_exist():
    with pytest.raises(ConfigError) as e:
        config_from_file("camvid", profile="gpu")
    msg = str(e.value)
    assert "no profile 'gpu'" in msg
    assert "cpu" in msg  # the profiles that do exist
    assert str(CONFIGS / "camvid.yaml") in msg
    with pytest.raises(ConfigError, match=r"no profile 'cpu' \(profiles in this file: none\)"):
        make_config(profile="cpu")


def test_profile_with_bad_keys_is_reported(tmp_path):
    data = list_config_dict()
    data["profiles"] = {"small": {"train": {"epochs": "x"}}}
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer"):
        from_dict(data, profile="small")
    assert from_dict(data).train.epochs == 80  # a profile is only applied when asked for


def test_profile_that_is_not_a_mapping():
    data = list_config_dict()
    data["profiles"] = {"small": 3}
    with pytest.raises(ConfigError, match=r"profiles\.small must be a mapping"):
        from_dict(data, profile="small")
    data["profiles"] = ["small"]
    with pytest.raises(ConfigError, match=r"profiles must be a mapping"):
        from_dict(data, profile="small")


def test_bare_off_in_yaml_is_the_string_off(tmp_path):
    # YAML 1.1 reads a bare `off` as false; train.amp's documented value "off" must still work
    p = tmp_path / "amp.yaml"
    p.write_text("dataset:\n  classes: [a, b]\ntrain:\n  amp: off\n")
    assert load_config(p).train.amp == "off"
    assert make_config(overrides=["train.amp=off"]).train.amp == "off"
    with pytest.raises(ConfigError, match=r"train\.amp must be one of 'auto', 'bf16', 'off', got True"):
        make_config(overrides=["train.amp=on"])
    with pytest.raises(ConfigError, match=r"train\.channels_last must be true or false"):
        make_config(overrides=["train.channels_last=auto"])


def test_dump_and_reload_round_trip(tmp_path):
    cfg = config_from_file("camvid", profile="cpu", overrides=["train.epochs=3"])
    dump_config(cfg, tmp_path / "out.yaml")
    again = load_config(tmp_path / "out.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert "source" not in cfg.to_dict()


@pytest.mark.parametrize("name,profile", [("camvid", "cpu"), ("demo", None)])
def test_the_cpu_profiles_use_the_one_cpu_recipe(name, profile):
    """configs/*.yaml are self-contained files a user reads; config.CPU_RECIPE is what `init --data` writes on a
    CPU. They must not drift apart."""
    from annotassist.config import CPU_RECIPE

    cfg = config_from_file(name, profile=profile)
    for section, values in CPU_RECIPE.items():
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value, (name, profile, section, key)


def test_the_starter_writes_the_cpu_recipe_on_a_cpu_and_the_published_one_on_a_gpu(tmp_path):
    from annotassist.config import CPU_RECIPE
    from annotassist.starter import starter_config
    from conftest import make_thin_set

    data = make_thin_set(tmp_path / "thin", n=6, masked=6, size=64)
    cpu = starter_config(data, ["background", "vessel"], "thin", has_gpu=False)
    assert cpu.model.backbone == "efficientnet_lite0"
    for section, values in CPU_RECIPE.items():
        for key, value in values.items():
            assert getattr(getattr(cpu, section), key) == value, (section, key)
    gpu = starter_config(data, ["background", "vessel"], "thin", has_gpu=True)
    default = Config()
    assert (gpu.model.backbone, gpu.model.decoder, gpu.region.width) == ("resnet101", "deeplabv3plus", 64)
    assert gpu.dssn == default.dssn  # the released recipe
