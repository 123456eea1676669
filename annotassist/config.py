"""YAML -> typed, validated settings.

A config is a tree of small dataclasses. Loading walks the YAML against the dataclass fields, so an unknown
key, a wrong type or a value outside its choices is reported with the file and the dotted key (all at once),
never silently ignored. `profiles:` holds named overrides (e.g. `cpu`) applied with `--profile`, and
`--set key=value` overrides single keys from the command line.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from .errors import ConfigError


@dataclass
class DatasetConfig:
    name: str = "dataset"
    # voc | cityscapes | list | folders | synthetic (see annotassist/data/layouts.py)
    layout: Literal["voc", "cityscapes", "list", "folders", "synthetic"] = "list"
    # data root; relative paths resolve against the current directory (like the published scripts)
    root: str = ""
    # the pool to label: a list file (list), an ImageSets split name or "all" (voc), a split folder
    # (cityscapes), ignored for folders
    pool: str = "train.txt"
    # the held-out evaluation set, same meaning as `pool`; "" for none
    val: str = "val.txt"
    image_dir: str = "images"  # folders layout
    mask_dir: str = "masks"  # folders layout
    classes: list[str] = field(default_factory=list)
    # one [r, g, b] per class; empty = a generated VOC-style palette
    palette: list[list[int]] = field(default_factory=list)
    # the value in the source masks that means "not labeled"; read as 255 internally (255 is always ignore)
    ignore_index: int = 255
    # the value each class has in the source mask files, when it is not the class id itself (binary masks
    # saved as 0/255: [0, 255]); every other value is then "not labeled". Empty = pixel value = class id
    mask_values: list[int] = field(default_factory=list)


@dataclass
class SyntheticConfig:
    """The embedded demo set (layout: synthetic). Generated into dataset.root when it is not there."""

    num_pool: int = 300
    num_val: int = 100
    size: int = 128
    seed: int = 0


@dataclass
class PoolConfig:
    # images labeled at init: 0 = every image that has a mask; N > 0 = N random masked images (seeded),
    # the others stay unlabeled with their masks kept as the oracle for the simulated annotator
    initial_labeled: int = 0
    seed: int = 0


@dataclass
class ModelConfig:
    backbone: Literal["resnet50", "resnet101", "efficientnet_lite0"] = "resnet101"
    # imagenet | none | a path to a state dict
    weights: str = "imagenet"
    output_stride: Literal[8, 16] = 16
    aspp_dilations: list[int] = field(default_factory=lambda: [6, 12, 18])
    # Dropout2d rate of the two feature-perturbed copies (need_fp)
    fp_dropout: float = 0.5
    # deeplabv3plus = the published decoder (ASPP + two 3x3 convs, 256 channels); light = 128 channels and
    # depthwise-separable 3x3 convs, for CPU profiles where the decoder would cost more than a small encoder
    decoder: Literal["deeplabv3plus", "light"] = "deeplabv3plus"


@dataclass
class TrainConfig:
    method: Literal["dssn", "supervised"] = "dssn"
    # one epoch = one pass over the unlabeled set (supervised: over the labeled set, repeated to that length)
    epochs: int = 80
    # > 0: stop after this many iterations whatever `epochs` says (short runs, tests, CPU profiles)
    max_iters: int = 0
    # per process; DSSN takes this many labeled AND this many unlabeled images (published: 2+2 per GPU)
    batch_size: int = 2
    crop_size: int = 513
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    # resize every image (train, eval, scoring) by this factor first: the CPU profiles' smaller images
    image_scale: float = 1.0
    lr: float = 0.001
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    criterion: Literal["ce", "ohem"] = "ce"
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 200000
    # balanced: weigh the labeled loss per class by share^-power of the labeled pixels (a thin or rare class,
    # a few % of the pixels, otherwise learns nothing in a short CPU round); none as published
    class_balance: Literal["none", "balanced"] = "none"
    class_balance_power: float = 0.5
    # auto = bf16 autocast on CUDA, fp32 on CPU
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool = False
    # keep BatchNorm layers in eval mode (small batches on CPU; exact single- vs multi-process checks)
    freeze_bn: bool = False
    # DataLoader workers (capped by the cores this process has: see annotassist/runtime/threads.py)
    num_workers: int = 2
    # on CPU, fewer torch threads while other processes keep the cores busy (up to 10x faster under load);
    # float sums then depend on the load, so set false where a rerun or a resume must match bit for bit
    adaptive_threads: bool = True
    # decode each image once at the working scale and keep it (uint8) for the process: up to this many MiB
    # (0 = decode every time); also used by evaluation, scoring and pre-annotation
    decode_cache_mb: int = 1024
    eval_mode: Literal["whole", "sliding"] = "whole"
    eval_every: int = 1
    log_every: int = 10
    seed: int = 0


@dataclass
class DSSNConfig:
    # class_aware (released): thr[b,c] = ratio * peak[b,c] if peak[b,c] > peak_gate else peak[b,c];
    # class_rank (short schedules): in each image keep the top `rank_keep` share of each predicted class's
    # pixels - no absolute gate, which a model trained for minutes rarely passes; global: UniMatch's threshold
    selection: Literal["class_aware", "class_rank", "global"] = "class_aware"
    peak_gate: float = 0.92
    peak_ratio: float = 0.96
    rank_keep: float = 0.5
    global_thresh: float = 0.95  # selection: global (UniMatch's fixed threshold, for ablations)
    ema_decay: float = 0.996
    # the teacher's BatchNorm when it pseudo-labels: batch = the batch's own statistics (as released), running =
    # its (EMA) running statistics (benchmarks/pseudo_label_quality.py: on 4-image 160-px crops of CamVid's
    # unlabeled frames 500-step models' pseudo-labels are 47.5 mIoU with batch statistics, 50.9 with running
    # ones, 3 seeds; in 200-step DSSN runs that bought no mIoU, README)
    teacher_bn: Literal["batch", "running"] = "batch"
    # pseudo-labels from the mean of the teacher's probabilities on the weak view and its mirror image
    teacher_flip: bool = False
    # evaluate and save the EMA teacher instead of the student (the student as released)
    eval_teacher: bool = False
    # teacher := student for this many epochs before the EMA starts (Cityscapes: 5)
    ema_warmup_epochs: int = 0
    # strong-view CE switched off for this many epochs (Cityscapes: 5)
    strong_warmup_epochs: int = 0
    # mse = the released z-scored-logit MSE; infonce = the paper's pixel contrast of positive pairs;
    # none = no alignment terms (ablation)
    align: Literal["mse", "infonce", "none"] = "mse"
    infonce_temperature: float = 0.5
    infonce_pixels: int = 1024
    # voc: 0.5*(Lx + 0.25*(Ls1+Ls2+Lfp+LFp) + 0.01*(MSEs+MSEfp)); cityscapes: 0.5*(...) + 0.005*(...);
    # additive (short schedules): Lx + w*(0.25*(...) + 0.01*(...)): the labeled loss keeps full weight, the
    # unlabeled terms come on top (w = unlabeled_weight times the ramp below)
    weighting: Literal["voc", "cityscapes", "additive"] = "voc"
    unlabeled_weight: float = 1.0
    # labeled images per step as a multiple of train.batch_size: 1 as released; 2 = the supervised baseline's
    # labeled batch, so that a short run does not halve its labeled signal (the extra items' unlabeled views
    # are loaded and not used)
    labeled_batch_mult: int = 1
    # joint (released): the labeled and weak unlabeled images share one forward with the two feature-perturbed
    # decodes (and BatchNorm batch); separate: the labeled images get a plain forward - their perturbed
    # decodes only fed the region discriminator, and at 2x the labeled batch they made the step ~40% dearer
    labeled_forward: Literal["joint", "separate"] = "joint"
    # shares of the run (0..1): supervised warm-up (labeled loss only, no unlabeled forward, teacher :=
    # student), then the unlabeled weight ramps in as exp(-5(1-t)^2) over `rampup`
    warmup: float = 0.0
    rampup: float = 0.0
    # inverse_freq: weigh each pseudo-class's kept pixels by (its share of the kept pixels)^-power, total
    # unchanged, so background does not swallow the rare classes; none as released
    class_balance: Literal["none", "inverse_freq"] = "none"
    class_balance_power: float = 1.0
    # distribution alignment: scale the teacher's probabilities by (labeled class share / its running mean
    # prediction) before selecting, so classes an early model under-predicts get pseudo-labels at all
    dist_align: bool = False
    cutmix_p: float = 0.5
    # strong views: ColorJitter(brightness, contrast, saturation, hue) with p=0.8, grayscale, Gaussian blur
    color_jitter: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5, 0.25])
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    # 1-3 random intensity ops on the strong views (the VOC recipe)
    intensity_ops: bool = True


@dataclass
class RegionConfig:
    """The region-relevance discriminator (methods.md section 2)."""

    # false: never train one. true: train one in every round whose strategy's scores or pseudo-label filter
    # read it (acquire/select.py: reads_region_judge); random and entropy rounds skip it
    enabled: bool = True
    lr: float = 1e-4
    # channels of its first conv (x2 per stride-2 layer): 64 as in RRN; at a 64 px crop on a CPU the 64-wide
    # judge costs ~15% of a DSSN step, and more of a supervised step at the effort benchmark's shape (measured in
    # configs/camvid.yaml's value profile), so the demo, CamVid cpu and value profiles use 32
    width: int = 64
    # drop pseudo-labels in 16x16 cells whose reliability is below `threshold` from the unlabeled losses
    filter: bool = False
    threshold: float = 0.6
    # start filtering after this many iterations: an untrained judge would drop everything
    filter_start_iter: int = 200


@dataclass
class AcquireConfig:
    strategy: str = "dssn"
    budget: int = 16
    # class weights from the labeled pool's class shares: exp = exp(-share) (Cai et al.), hwang = (6*share+1)^-2
    class_weight: Literal["exp", "hwang"] = "exp"
    # region_relevance regions: 16x16 cells or SLIC superpixels; image score = mean of the top-k regions
    regions: Literal["cells", "superpixels"] = "cells"
    topk_regions: int = 8
    superpixels: int = 150
    slic_compactness: float = 10.0
    ripu_radius: int = 1
    # dssn strategy: score = alpha * rank(class_aware) + (1 - alpha) * rank(region_relevance)
    alpha: float = 0.5
    # penalty weight for cosine similarity to images already picked or labeled
    diversity: float = 0.5
    # dssn_cost: how much an image's expected correction cost (mean 1 - p1: the pixels its pre-annotation is
    # expected to need changed) counts against its gain; both standardised over the candidates
    cost_weight: float = 1.0
    # what a person is asked to label: whole images, or SLIC superpixel regions (`superpixels` per image at the
    # working scale) of many images, chosen by the strategy's region scores (acquire/regions.py)
    unit: Literal["image", "region"] = "image"
    # region mode: regions asked per round; budget_share > 0 asks for that share of the pool's pixels instead
    region_budget: int = 64
    budget_share: float = 0.0
    # region mode: each region already picked in an image multiplies that image's other regions' scores by
    # (1 - region_spread), so the budget spreads over many images instead of one image's whole area
    region_spread: float = 0.3
    # region mode, dssn: weight of the RIPU-style impurity (predicted-class mix inside the region) beside
    # class-aware confidence and region relevance
    impurity_weight: float = 0.5
    batch_size: int = 8
    num_workers: int = 2


@dataclass
class LoopConfig:
    """`annotassist loop`: rounds of train -> score -> select -> pre-annotate -> correct."""
    rounds: int = 5  # acquisition rounds in all (a rerun continues the same count); a final model is trained after
    annotator: Literal["simulated", "labelstudio", "gradio"] = "simulated"
    warm_start: bool = True  # start each round from the previous round's model instead of ImageNet weights
    target_miou: float = 0.0  # stop once the evaluation mIoU reaches this (0..1; 0 = never)
    poll_seconds: float = 10.0  # how often to look for corrections while a person works
    # hand the person the model's pseudo-masks to correct (false: they draw from scratch; the benchmark's
    # "no assistant" arm)
    pre_annotate: bool = True
    # test-time views of the pre-annotations (predict.py): none, flip (+ the mirror image: 2 forwards an image),
    # multiscale (scales 0.75/1/1.25, each mirrored: 6). Only the queued images are pre-annotated, so the views
    # cost seconds a round; they leave fewer wrong pixels for the person (benchmarks/pseudo_label_quality.py)
    tta: Literal["none", "flip", "multiscale"] = "multiscale"
    labelstudio_url: str = "http://localhost:8080"


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dssn: DSSNConfig = field(default_factory=DSSNConfig)
    region: RegionConfig = field(default_factory=RegionConfig)
    acquire: AcquireConfig = field(default_factory=AcquireConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    # named override trees, applied with --profile NAME
    profiles: dict[str, dict] = field(default_factory=dict)
    # the profile applied to this config (recorded by --profile; the values it set are in the sections above)
    profile: str = ""
    # where this config came from (set by the loader, not a key)
    source: str = field(default="", metadata={"internal": True})

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    def palette(self) -> list[tuple[int, int, int]]:
        if self.dataset.palette:
            return [tuple(c) for c in self.dataset.palette]
        return voc_palette(self.num_classes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d


def voc_palette(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map (bit-interleaved), which also gives any number of distinct colours."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


# ---------------------------------------------------------------------------------------------------------
# loading and validation


# What a round on a CPU can afford, measured where the CPU profiles are (configs/camvid.yaml `cpu`, configs/demo.yaml;
# README, Speed): the light decoder, a 32-wide region judge and the short-schedule DSSN recipe (train/dssn.py; the
# released one keeps ~0-3% of pseudo-labels in a few hundred steps). `init --data` writes it into a CPU machine's
# config; tests/test_config.py keeps the YAML profiles in step with it.
CPU_RECIPE: dict[str, dict] = {
    "model": {"decoder": "light"},
    "region": {"width": 32},
    "dssn": {"ema_decay": 0.99, "weighting": "additive", "labeled_batch_mult": 2, "labeled_forward": "separate",
             "selection": "class_rank", "rank_keep": 0.5, "warmup": 0.2, "rampup": 0.3,
             "class_balance": "inverse_freq", "class_balance_power": 0.5, "dist_align": True},
}


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list,):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_value(value: Any, tp: Any, key: str, errors: list[str]) -> Any:
    """Return `value` converted to `tp`, or append an error naming `key`."""
    origin = get_origin(tp)
    if origin is Literal:
        if isinstance(value, bool) and ("off" if not value else "on") in get_args(tp):
            value = "off" if not value else "on"  # YAML 1.1 reads a bare off/on as false/true
        if value in get_args(tp) and type(value) is type(get_args(tp)[get_args(tp).index(value)]):
            return value
        errors.append(f"{key} must be {_type_name(tp)}, got {value!r}")
        return None
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_value(value, args[0], key, errors)
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{key} must be {_type_name(tp)}, got {value!r}")
            return None
        (inner,) = get_args(tp)
        return [_check_value(v, inner, f"{key}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{key} must be a mapping, got {value!r}")
            return None
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    errors.append(f"{key} must be {_type_name(tp)}, got {value!r}")
    return None


def _apply(obj: Any, data: dict, prefix: str, errors: list[str]) -> None:
    """Write the YAML mapping `data` onto the dataclass instance `obj`, checking every key and type."""
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj) if not f.metadata.get("internal")}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            errors.append(f"unknown key '{dotted}'{hint}")
            continue
        tp = hints[key]
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                errors.append(f"{dotted} must be a mapping of settings, got {value!r}")
                continue
            _apply(current, value, dotted + ".", errors)
            continue
        n_before = len(errors)
        checked = _check_value(value, tp, dotted, errors)
        if len(errors) == n_before:
            setattr(obj, key, checked)


def _validate_semantics(cfg: Config, errors: list[str]) -> None:
    d = cfg.dataset
    if not d.classes:
        errors.append("dataset.classes is empty: list the class names, in the order of the mask values")
    if d.palette and len(d.palette) != len(d.classes):
        errors.append(f"dataset.palette has {len(d.palette)} colours for {len(d.classes)} classes")
    for i, c in enumerate(d.palette):
        if c is not None and (len(c) != 3 or any(not (0 <= v <= 255) for v in c if v is not None)):
            errors.append(f"dataset.palette[{i}] must be [r, g, b] with values 0..255, got {c}")
    if d.mask_values:
        if len(d.mask_values) != len(d.classes):
            errors.append(f"dataset.mask_values has {len(d.mask_values)} values for {len(d.classes)} classes")
        elif len(set(d.mask_values)) != len(d.mask_values) or any(not (0 <= v <= 65535) for v in d.mask_values):
            errors.append(f"dataset.mask_values must be distinct pixel values 0..65535, got {d.mask_values}")
    if not (0 <= d.ignore_index <= 255):
        errors.append(f"dataset.ignore_index must be 0..255, got {d.ignore_index}")
    elif d.ignore_index < len(d.classes) and not d.mask_values:
        errors.append(f"dataset.ignore_index {d.ignore_index} is also a class id (there are "
                      f"{len(d.classes)} classes, 0..{len(d.classes) - 1})")
    if len(d.classes) > 255:
        errors.append("at most 255 classes fit an 8-bit mask")
    t = cfg.train
    if t.batch_size < 1:
        errors.append("train.batch_size must be at least 1")
    if t.crop_size < 32:
        errors.append("train.crop_size must be at least 32")
    if len(t.scale_range) != 2 or t.scale_range[0] <= 0 or t.scale_range[0] > t.scale_range[1]:
        errors.append(f"train.scale_range must be [low, high] with 0 < low <= high, got {t.scale_range}")
    if not (0 < t.image_scale <= 4):
        errors.append(f"train.image_scale must be in (0, 4], got {t.image_scale}")
    if t.lr <= 0:
        errors.append("train.lr must be positive")
    if t.epochs < 1 and t.max_iters < 1:
        errors.append("train.epochs or train.max_iters must be at least 1")
    s = cfg.dssn
    if not (0 < s.peak_ratio <= 1):
        errors.append("dssn.peak_ratio must be in (0, 1]")
    if not (0 <= s.peak_gate <= 1):
        errors.append("dssn.peak_gate must be in [0, 1]")
    if not (0 <= s.ema_decay < 1):
        errors.append("dssn.ema_decay must be in [0, 1)")
    if not (0 < s.rank_keep <= 1):
        errors.append(f"dssn.rank_keep must be in (0, 1] (the share of each class's pixels kept), got {s.rank_keep}")
    if s.unlabeled_weight < 0:
        errors.append("dssn.unlabeled_weight must be >= 0")
    if s.labeled_batch_mult < 1:
        errors.append("dssn.labeled_batch_mult must be at least 1")
    if not (0 <= s.warmup < 1) or s.rampup < 0 or s.warmup + s.rampup > 1:
        errors.append(f"dssn.warmup and dssn.rampup are shares of the run: warmup in [0, 1), rampup >= 0, "
                      f"together at most 1 (got {s.warmup} and {s.rampup})")
    if s.class_balance_power < 0:
        errors.append("dssn.class_balance_power must be >= 0")
    if cfg.region.width < 1:
        errors.append(f"region.width must be at least 1 (channels of the discriminator's first conv), "
                      f"got {cfg.region.width}")
    if len(s.color_jitter) != 4 or any(v < 0 for v in s.color_jitter) or s.color_jitter[3] > 0.5:
        errors.append("dssn.color_jitter must be [brightness, contrast, saturation, hue] >= 0, hue <= 0.5")
    if not (0 <= cfg.model.fp_dropout < 1):
        errors.append("model.fp_dropout must be in [0, 1)")
    if cfg.acquire.budget < 1:
        errors.append("acquire.budget must be at least 1")
    if not (0 <= cfg.acquire.alpha <= 1):
        errors.append("acquire.alpha must be in [0, 1]")
    a = cfg.acquire
    if a.region_budget < 1:
        errors.append(f"acquire.region_budget must be at least 1 (regions per round), got {a.region_budget}")
    if not (0 <= a.budget_share <= 1):
        errors.append(f"acquire.budget_share must be in [0, 1] (a share of the pool's pixels per round; 0 = use "
                      f"region_budget), got {a.budget_share}")
    if not (0 <= a.region_spread < 1):
        errors.append(f"acquire.region_spread must be in [0, 1), got {a.region_spread}")
    if not (2 <= a.superpixels < 65535):
        errors.append(f"acquire.superpixels must be in [2, 65535), got {a.superpixels}")


def _error_key(message: str) -> str:
    """The dotted key an error message is about ("unknown key 'a.b'; ..." or "a.b must be ...")."""
    if message.startswith("unknown key '"):
        return message.split("'")[1]
    return message.split(" ")[0].split("[")[0]


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=3' -> (['train', 'epochs'], 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: write KEY=VALUE, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({e})") from None
    return key.strip().split("."), value


def _nest(path: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def from_dict(data: dict, source: str = "<dict>", profile: str | None = None,
              overrides: list[str] | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (dataset:, model:, ...)")
    if profile:
        profiles = data.get("profiles") or {}
        if not isinstance(profiles, dict):
            raise ConfigError(f"{source}: profiles must be a mapping of profile names to settings")
        if profile not in profiles:
            known = ", ".join(profiles) or "none"
            raise ConfigError(f"{source}: no profile '{profile}' (profiles in this file: {known})")
        if not isinstance(profiles[profile] or {}, dict):
            raise ConfigError(f"{source}: profiles.{profile} must be a mapping of settings, "
                              f"got {profiles[profile]!r}")
        data = _merge({k: v for k, v in data.items()}, profiles[profile] or {})
        data["profile"] = profile
    given = {}
    for text in overrides or []:
        path, value = parse_override(text)
        given[".".join(path)] = text
        data = _merge(data, _nest(path, value))
    cfg = Config()
    errors: list[str] = []
    _apply(cfg, data, "", errors)
    if not errors:
        _validate_semantics(cfg, errors)
    # a problem with a key given on the command line is the command line's, not the file's
    from_cli = [e for e in errors if _error_key(e) in given]
    errors = [e for e in errors if e not in from_cli]
    if from_cli and not errors:
        raise ConfigError("; ".join(f"--set {given[_error_key(e)]}: {e}" for e in from_cli))
    errors += [f"{e} (from --set {given[_error_key(e)]})" for e in from_cli]
    if errors:
        raise ConfigError(f"{source}: {len(errors)} problem(s) in the config:\n  - " + "\n  - ".join(errors))
    cfg.source = source
    return cfg


def machine_profile(path: str | Path, requested: str | None) -> tuple[str | None, str]:
    """The profile to apply on this machine, and a line saying so when it was chosen for the user.

    An explicit --profile wins ('none' = the config as written). Otherwise, with no CUDA device, a config's
    `cpu` profile is chosen: the GPU recipes (ResNet-101 weights from the internet, crop 321+, 80 epochs)
    are not what a laptop can run."""
    if requested == "none":
        return None, ""
    if requested:
        return requested, ""
    try:
        profiles = (yaml.safe_load(Path(path).read_text()) or {}).get("profiles") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None, ""  # load_config reports the file's problem
    if "cpu" not in profiles:
        return None, ""
    import torch

    if torch.cuda.is_available():
        return None, ""
    sets = ", ".join(f"{k}" for k in sorted(flatten(profiles["cpu"] or {})))
    return "cpu", (f"no CUDA device here: using the 'cpu' profile of {path} ({sets}); "
                   "--profile none runs the config as written, --profile NAME another profile")


def load_config(path: str | Path, profile: str | None = None, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        configs = sorted(p.name for p in Path("configs").glob("*.yaml")) if Path("configs").is_dir() else []
        hint = f" (configs here: {', '.join(configs)})" if configs else ""
        raise ConfigError(f"config file not found: {path}{hint}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    return from_dict(data, source=str(path), profile=profile, overrides=overrides)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "profiles":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(old: Config, new: Config, sections: tuple[str, ...] | None = None) -> list[str]:
    """'key: old -> new' for every setting that differs (optionally only under the given sections)."""
    a, b = flatten(old.to_dict()), flatten(new.to_dict())
    keys = [k for k in dict.fromkeys(list(a) + list(b)) if k != "profiles"]
    if sections:
        keys = [k for k in keys if k.split(".")[0] in sections]
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
