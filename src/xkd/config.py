"""The configuration schema: every hyper-parameter of pretraining and of fine-tuning, with the paper's defaults
(spec §A2, §A10, §A12).

Defaults reproduce the XKD Kinetics-400 recipe and its UCF101 fine-tuning. ``configs/pretrain/*_avdigits_cpu.yaml`` scale it down for a CPU.
``docs/CONFIG.md`` maps each key to the paper and to the original code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from xkd.config_io import ConfigError, dump_config, from_dict, load_config, to_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LogMelConfig:
    """Log-mel front end (librosa conventions: centred STFT, Hann window, power spectrum, Slaney mel)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 143
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_eps: float = 1.1920928955078125e-07  # float32 machine epsilon, as in the original code
    norm_mean: float = -5.3688107  # Kinetics-400 statistics of the log-mel values
    norm_std: float = 4.410007
    center_bands: bool = False  # subtract each mel band's mean over the clip's frames before norm_mean / norm_std


@dataclass
class VideoViewConfig:
    """One video view: random resized crop, flip, colour jitter, grayscale, blur, then ImageNet normalisation."""

    crop_size: int = 112
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    p_flip: float = 0.5
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.2)  # brightness, contrast, saturation, hue
    p_color: float = 1.0
    p_gray: float = 0.0
    p_blur: float = 0.0
    blur_kernel: int = 9
    blur_sigma: tuple[float, float] = (0.1, 2.0)


@dataclass
class AudioViewConfig:
    """One audio view: a waveform segment with gain jitter, log-mel, optional BYOL-A random resize crop."""

    duration: float | None = None  # seconds; None = the whole clip window (global view)
    start_multiple: int = 100  # local segment starts on a multiple of this many samples
    gain: tuple[float, float] = (0.9, 1.1)
    random_resize_crop: bool = False
    virtual_crop_scale: tuple[float, float] = (1.0, 1.5)
    freq_scale: tuple[float, float] = (0.6, 1.5)
    time_scale: tuple[float, float] = (0.6, 1.5)


@dataclass
class DataConfig:
    """Where clips come from and how one training sample is made (spec §A2)."""

    manifest: str = ""  # CSV manifest (see xkd.data.manifest); empty = must be given on the command line
    root: str = ""  # prefix for relative paths in the manifest; empty = the manifest's folder
    split: str = "train"  # rows of this split are used (empty = all rows)
    clip_duration: float = 4.0
    video_fps: float = 8.0
    resize_short: int = 112  # short side after decoding (the "Basic" resize)
    video_mean: tuple[float, float, float] = IMAGENET_MEAN
    video_std: tuple[float, float, float] = IMAGENET_STD
    video_global: VideoViewConfig = field(default_factory=VideoViewConfig)
    video_local: VideoViewConfig = field(
        default_factory=lambda: VideoViewConfig(crop_size=96, crop_scale=(0.08, 0.4), p_gray=0.2, p_blur=0.5)
    )
    num_local_views: int = 1  # video local views (3 in MAS / MATS)
    video_views_on: Literal["loader", "device"] = "loader"  # device: colour jitter, grayscale, blur, normalisation there
    temporal_ratio: int = 4  # a local video view holds num_frames / temporal_ratio frames
    logmel: LogMelConfig = field(default_factory=LogMelConfig)
    audio_global: AudioViewConfig = field(default_factory=AudioViewConfig)
    audio_local: AudioViewConfig = field(
        default_factory=lambda: AudioViewConfig(duration=1.0, gain=(0.8, 1.2), random_resize_crop=True)
    )
    bad_media: Literal["skip", "error"] = "skip"  # skip = log, count and replace by another sample
    missing_audio: Literal["skip", "silence"] = "skip"  # silence = use a silent track for video-only files
    decoded_cache: str = ""  # folder made by `xkd data predecode` (windows sliced from it); empty = decode the files
    shards: str = ""  # shard folder or brace pattern of `xkd data shard` (pretraining reads it instead of manifest)
    shard_window: int = 8  # consecutive samples of one shard read per draw (xkd.data.shard_stream)
    clips_per_decode: int = 1  # shards: clips cut from one decode of a sample (its windows and views differ)
    decode_threads: int = 1  # FFmpeg video decoder threads per loader process (0 = FFmpeg's choice)
    num_workers: int = 2
    batch_size: int = 32  # per process, per micro-step


@dataclass
class EncoderConfig:
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = False


@dataclass
class ModelConfig:
    """Encoders, decoders and heads (spec §A3)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder_dim: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 12
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_out: int = 8192
    num_frames: int = 32
    frame_size: int = 112
    video_patch: tuple[int, int, int] = (4, 16, 16)  # time, height, width
    spec_size: tuple[int, int] = (80, 448)  # mel bins, frames
    audio_patch: tuple[int, int] = (4, 16)  # freq, time
    projection_dim: int = 256  # cav-mae: a linear projection per modality before the InfoNCE; 0 = none (CAV-MAE)


@dataclass
class LossConfig:
    """Objectives and their weights (spec §A4-A7)."""

    video_mask_ratio: float = 0.85
    audio_mask_ratio: float = 0.80
    norm_pix_loss: bool = True
    recon_coeff: float = 5.0
    kd_coeff: float = 1.0
    da_coeff: float = 1.0
    recon_video: bool = True  # ablations: reconstruct one modality only
    recon_audio: bool = True
    kd: bool = True
    da: bool = True
    refine: bool = True
    refine_mode: Literal["mean", "softmax"] = "mean"
    teacher_view: Literal["local", "global"] = "local"  # local = the released code, global = the paper's Fig. 1
    student_temp: float = 0.1
    video_teacher_temp: float = 0.1
    video_teacher_temp_warmup: float = 0.1
    audio_teacher_temp: float = 0.07
    audio_teacher_temp_warmup: float = 0.07
    teacher_temp_warmup_epochs: int = 30
    center_momentum: float = 0.9
    teacher_assignment: Literal["center", "sinkhorn"] = "center"  # sinkhorn: balanced targets (small data; CONFIG.md)
    sinkhorn_iters: int = 3
    mmd_gammas: tuple[float, ...] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)
    ema_start: float = 0.997
    ema_end: float = 1.0
    mats_double_ema: bool = True  # MATS: EMA the shared teacher blocks once per modality (the released code)
    # cav-mae: InfoNCE between the pooled video and audio embeddings of a clip (CAV-MAE; docs/CONFIG.md)
    contrastive_coeff: float = 0.025  # CAV-MAE's 0.01 against the sum of the two reconstruction terms
    contrastive_temp: float = 0.05
    contrastive_symmetric: bool = True  # False = video -> audio only, as CAV-MAE's released code
    contrastive_view: Literal["masked", "whole"] = "masked"  # masked = the students' masked global views (CAV-MAE)
    contrastive_standardize: bool = False  # standardise each dimension over the global batch before the InfoNCE


@dataclass
class OptimConfig:
    epochs: int = 800
    steps: int = 0  # schedule length in optimiser steps (xkd pretrain --steps); 0 = epochs x steps per epoch
    lr: float = 1e-4
    final_lr: float = 0.0
    warmup_epochs: int = 30
    weight_decay: float = 0.3
    final_weight_decay: float = 0.3
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float = 0.3  # per-parameter grad-norm clip of student backbones and heads; 0 = off
    clip_decoders: bool = False  # the released code does not clip decoders
    decay_embeddings: bool = True  # the released code decays cls_token, pos_embed and mask_token
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimiser step


@dataclass
class RunConfig:
    seed: int = 99999
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"  # bf16/fp16 fall back to fp32 where the device is not fast in them
    force_amp: bool = False  # keep run.amp even where a probe finds it slower than fp32
    max_steps: int = 0  # 0 = run all epochs
    checkpoint_every: int = 500  # steps; a checkpoint is also written at the end
    keep_checkpoints: int = 3  # run checkpoints kept on disk (the newest ones)
    snapshot_every: int = 0  # steps between weight snapshots (snapshots/step_*.safetensors, all kept); 0 = none
    probe_every: int = 0  # steps between teacher-cluster diagnostics (xkd.engine.cluster_probe); 0 = none
    probe_clips: int = 256  # training clips the cluster diagnostics assign (evenly spaced rows, fixed)
    log_every: int = 10  # steps
    epoch_size: int = 0  # samples per epoch; 0 = the manifest's size (rounded down to whole steps)
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/Inf loss stops the run, or skips the step and counts it
    peak_tflops: float = 0.0  # for MFU; 0 = measure this device's fp32 matmul peak at start
    strategy: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate the model (ddp) or shard it (fsdp, FSDP2)
    threads: int = 0  # torch CPU threads; 0 = on CPU, the cores left beside data.num_workers (at least 1), on GPU torch's default


@dataclass
class PretrainConfig:
    """Top-level pretraining config: ``xkd pretrain --config FILE``."""

    method: Literal["xkd", "xkd-mas", "xkd-mats", "mae", "cav-mae"] = "xkd"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        m = self.model
        if m.num_frames % m.video_patch[0] or m.frame_size % m.video_patch[1] or m.frame_size % m.video_patch[2]:
            raise ValueError(f"model.num_frames / frame_size must be multiples of model.video_patch {m.video_patch}")
        if m.spec_size[0] % m.audio_patch[0] or m.spec_size[1] % m.audio_patch[1]:
            raise ValueError(f"model.spec_size {m.spec_size} must be a multiple of model.audio_patch {m.audio_patch}")
        if m.encoder.dim % m.encoder.heads:
            raise ValueError("model.encoder.dim must be divisible by model.encoder.heads")
        if m.decoder_dim % m.decoder_heads:
            raise ValueError("model.decoder_dim must be divisible by model.decoder_heads")


@dataclass
class FinetuneConfig:
    """One end-to-end fine-tuning recipe (``xkd eval finetune``; spec §A10). The defaults are the UCF101 /
    Kinetics-400 video recipe except ``video_view.crop_size`` (0 = the encoder's configured frame size; the paper
    fine-tunes video at 224). ``configs/finetune/*.yaml`` hold the paper's recipes."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {k: f"video_view.{k}" for k in ("crop_size", "crop_scale", "crop_ratio",
                                                                              "p_flip")}

    # optimisation
    epochs: int = 100
    batch_size: int = 24  # per process and micro-step
    accum_steps: int = 1  # micro-batches per optimiser step
    lr: float = 5e-4
    min_lr: float = 1e-6  # the cosine ends here; min_lr == lr keeps the rate fixed after warm-up
    warmup_epochs: int = 5
    warmup_start_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 0.45  # BEiT layer-wise lr decay (1 = off)
    # targets and head
    label_smoothing: float = 0.1
    mixup: float = 0.6  # Beta alpha; 0 = off
    cutmix: float = 0.5  # Beta alpha; 0 = off
    mixup_prob: float = 1.0  # probability that a batch is mixed at all
    switch_prob: float = 0.5  # probability of cutmix rather than mixup when both are on
    dropout: float = 0.5  # before the linear head
    l2_normalize_features: bool = False  # ESC-50: L2-normalise the pooled features, then dropout
    multilabel: bool = False  # FSD50K: binary cross-entropy and mAP
    # video train view: random resized crop (crop_size 0 = the encoder's frame size), flip, no colour; then erasing
    video_view: VideoViewConfig = field(default_factory=lambda: VideoViewConfig(
        crop_size=0, crop_scale=(0.2, 0.766), crop_ratio=(0.75, 1.333), p_flip=0.5, p_color=0.0))
    random_erase: float = 0.25  # probability of erasing one box (all frames alike)
    # audio train view
    gain_jitter: float = 0.2  # waveform gain ~U(1 - g, 1 + g)
    audio_resize_crop: bool = True  # BYOL-A random resize crop of the log-mel
    time_warp: int = 20  # SpecAugment time-warp window in frames; 0 = off
    freq_masks: int = 2
    freq_mask_width: int = 10  # each mask covers U{0..width} mel bins
    time_masks: int = 2
    time_mask_width: int = 20  # each mask covers U{0..width} frames
    # evaluation
    test_clips: int = 3
    test_crops: int = 3  # video only: 1 (centre) or 3 (left / centre / right)
    val_clips: int = 1
    val_fraction: float = 0.1  # of the training rows; 0 = no val split, the last epoch is tested
    # run
    amp: Literal["none", "bf16", "fp16"] = "none"  # falls back to fp32 where the device is not fast in it
    force_amp: bool = False  # keep amp even where a probe finds it slower than fp32
    seed: int = 0
    num_workers: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "accum_steps", "test_clips", "val_clips")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be >= 1")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.test_crops not in (1, 3):
            raise ValueError(f"test_crops must be 1 or 3, got {self.test_crops}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.video_view.crop_size < 0:
            raise ValueError(f"video_view.crop_size must be positive, or 0 for the encoder's frame size, got "
                             f"{self.video_view.crop_size}")


__all__ = [
    "ConfigError",
    "LogMelConfig",
    "VideoViewConfig",
    "AudioViewConfig",
    "DataConfig",
    "EncoderConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "RunConfig",
    "PretrainConfig",
    "FinetuneConfig",
    "load_config",
    "dump_config",
    "to_dict",
    "from_dict",
]
