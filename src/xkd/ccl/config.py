"""The CCL configuration schema, with the released recipe's defaults (spec §B2-B6); load it with
``xkd.config_io.load_config(CCLConfig, path, overrides)``. ``configs/ccl/*.yaml`` hold the recipes; ``docs/CCL.md``
explains every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from xkd.config import VideoViewConfig

KINETICS_MEAN = (0.4345, 0.4051, 0.3775)  # the statistics CCL normalises with (spec §B2), not ImageNet's
KINETICS_STD = (0.2768, 0.2713, 0.2737)
VARIANTS = {"baseline": (), "ccl-a": ("audio",), "ccl-i": ("image",), "ccl-ai": ("audio", "image")}


@dataclass
class CCLDataConfig:
    """Clips, labels and views. A clip is one of the non-overlapping ``num_frames / video_fps``-second windows of a
    video. Keys are named as in pretraining's ``data`` section; the older ``fps``, ``mean`` and ``std`` are still read."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"fps": "video_fps", "mean": "video_mean", "std": "video_std"}

    manifest: str = ""
    root: str = ""  # prefix of relative manifest paths; empty = the manifest's folder
    label_column: str = "label"  # any manifest column, e.g. digit or motion on AV-Digits
    train_split: str = "train"
    val_split: str = "val"  # selects the checkpoint; never the test split
    val_fraction: float = 0.0  # > 0: hold out this fraction of each class's training videos as validation instead
    test_split: str = "test"
    num_frames: int = 16
    video_fps: float = 25.0
    resize_short: int = 128  # short side the frames are decoded to
    train_view: VideoViewConfig = field(
        default_factory=lambda: VideoViewConfig(crop_size=112, crop_scale=(0.25, 1.0), p_flip=0.5, p_color=0.0)
    )
    video_mean: tuple[float, float, float] = KINETICS_MEAN
    video_std: tuple[float, float, float] = KINETICS_STD
    batch_size: int = 16
    eval_batch_size: int = 32
    num_workers: int = 2
    preload: bool = False  # decode every window once into run.cache_dir (xkd.data.decoded) and read it from there
    # a label budget: this many training videos per class keep their label (stratified, drawn from run.seed, the
    # same for every variant of a seed; val and test untouched); 0 = every training video is labelled
    labels_per_class: int = 0
    # the training videos outside the budget: "drop" = not used (every loss on the labelled videos, the faithful
    # reading); "distill" = they enter the teacher terms only (no cross-entropy), each clip's positive its own
    # teacher feature, unlabelled_batch_size of them beside every labelled batch
    unlabelled: Literal["drop", "distill"] = "drop"
    unlabelled_batch_size: int = 0  # 0 = batch_size

    @property
    def clip_duration(self) -> float:
        return self.num_frames / self.video_fps


@dataclass
class StudentConfig:
    """R(2+1)D (spec §B3). ``one_block_per_stage`` reproduces the released code (depth 18 built as (1, 1, 1, 1))."""

    depth: int = 18
    one_block_per_stage: bool = False
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)


@dataclass
class TeacherConfig:
    """One frozen teacher (see ``xkd.ccl.teachers``); ``kind`` empty = none."""

    kind: str = ""
    temperature: float = 0.5  # NCE temperature of this teacher's pair losses
    path: str = ""  # the model file of torchscript / onnx / safetensors teachers
    factory: str = ""  # safetensors: "package.module:function" building the nn.Module
    factory_kwargs: dict[str, bool | int | float | str] = field(default_factory=dict)
    # image input: grayscale first, resize to input_size (0 = as given), then (x - mean) / std
    input_size: int = 0
    grayscale: bool = False
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    mnist_centering: bool = True  # ccexam-mnist: centre and scale the digit as MNIST; False = resize the frame
    # image teachers: "augmented" = run on one frame of the student's augmented clip every step (spec §B2),
    # "cached" = precomputed on every clean frame of each clip, one frame drawn per step
    input: Literal["augmented", "cached"] = "augmented"
    # audio input: waveform at sample_rate, multiplied by input_scale
    sample_rate: int = 16000
    input_scale: float = 1.0
    steps: Literal["mean", "random"] = "mean"  # audio: average the clip's time steps, or draw one (the code)
    # feed (x_t - mean) / s instead of x_t: mean and s (the RMS of the per-dimension stds) of the training clips'
    # features. Off in the released code; needed for teachers whose features share a large offset (openwakeword).
    standardize: bool = False
    threads: int = 1  # onnxruntime threads


@dataclass
class CCLLossConfig:
    variant: Literal["baseline", "ccl-a", "ccl-i", "ccl-ai"] = "ccl-ai"
    two_teacher_weight: float = 0.5  # CCL-AI: weight of each teacher's terms in the video loss (--loss_weight)
    # how x_v meets a teacher's features in the pair losses: "auto" = the identity where D_t = D_v and the teacher's
    # features are not standardised, a learned linear map otherwise; "linear" = always the map; "identity" = the
    # identity wherever D_t = D_v, standardised or not (the released code's rule)
    projection: Literal["auto", "linear", "identity"] = "auto"


@dataclass
class CCLOptimConfig:
    """SGD with momentum and a step schedule (spec §B6)."""

    epochs: int = 300
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [150, 225])  # epochs where the lr is multiplied by gamma
    gamma: float = 0.1
    schedule_compositions: bool = True  # False = the released code: composition modules stay at the base lr


@dataclass
class CCLRunConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0 = torch's default)
    eval_every: int = 1  # epochs between validations
    log_every: int = 20  # steps between metric rows
    cache_dir: str = ""  # teacher features (and predecoded windows); empty = ~/.cache/xkd/ccl
    retrieval: bool = True  # also report test -> train retrieval R@k with the selected checkpoint
    keep_checkpoints: int = 1


@dataclass
class CCLConfig:
    data: CCLDataConfig = field(default_factory=CCLDataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    audio_teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(temperature=0.5))
    image_teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(temperature=0.1))
    loss: CCLLossConfig = field(default_factory=CCLLossConfig)
    optim: CCLOptimConfig = field(default_factory=CCLOptimConfig)
    run: CCLRunConfig = field(default_factory=CCLRunConfig)

    def teachers(self) -> dict[str, TeacherConfig]:
        """The teachers the variant uses, by modality; ValueError when one of them has no ``kind``."""
        used = {m: getattr(self, f"{m}_teacher") for m in VARIANTS[self.loss.variant]}
        for modality, teacher in used.items():
            if not teacher.kind:
                raise ValueError(f"loss.variant={self.loss.variant} uses the {modality} teacher: set "
                                 f"{modality}_teacher.kind (one of ccexam-mnist, efficientnet-lite0, openwakeword, "
                                 "torchscript, onnx, safetensors)")
        return used
