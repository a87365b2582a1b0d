"""Typed configuration of a synthesis run, with the paper's preset and a fast CPU preset.

``SynthConfig`` is saved as ``config.json`` next to every checkpoint together with the sequence set,
so a run folder rebuilds its networks from JSON alone.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mridomain.engine import Settings, TrainSettings

__all__ = ["NetworkConfig", "SynthConfig", "PRESETS", "make_config", "BRATS_SEQUENCES"]

#: BraTS' four sequences, in the order of the paper's tables (file suffixes of the BraTS layout).
BRATS_SEQUENCES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

Mode = Literal["2d", "2.5d", "3d"]


class NetworkConfig(Settings):
    """Generator and discriminator shapes. ``mode``: ``2d`` (one slice), ``2.5d`` (three adjacent
    slices as channels, the paper's BraTS setting) or ``3d`` (volumes)."""

    mode: Mode = "2.5d"
    code_dim: int = Field(64, ge=1)          # length of the one-hot sequence code (c_s)
    bank_dim: int = Field(16, ge=1)          # HyperConv weight-bank dimension (c_w)
    enc_channels: tuple[int, int, int] = (64, 128, 256)
    enc_kernels: tuple[int, int, int] = (7, 3, 3)
    dec_channels: tuple[int, int] = (128, 64)
    dec_kernels: tuple[int, int, int] = (3, 3, 7)
    n_res_enc: int = Field(6, ge=0)
    n_res_dec: int = Field(6, ge=0)
    lstm_layers: int = Field(3, ge=0)        # 0: no ConvLSTM (4-D inputs are then only averaged)
    norm: Literal["instance", "none"] = "instance"
    # the encoder's three convolutions as HyperConv layers of the source sequence's code; the paper's
    # encoder sees no code (False), so it must recognise the source's contrast from the pixels
    source_code: bool = False
    # no stride-2 convolutions and no upsampling: every layer at the image's resolution (not in the
    # paper, whose features are 4x down); for small, shallow CPU generators
    full_resolution: bool = False
    # Gaussian bumps of each input channel's intensity fed to the encoder beside it (0: off, the
    # paper): any smooth lookup of a voxel's intensity becomes linear (network.intensity_features)
    intensity_bins: int = Field(0, ge=0)
    # after the encoder, a branch that adds two convolutions of the features average-pooled by this
    # factor (0: off, the paper): context beyond the few 3x3 layers of a full-resolution generator
    # (network.ContextBranch); spatial sizes must then be multiples of it
    context_pool: int = Field(0, ge=0)
    disc_channels: int = Field(64, ge=1)     # first PatchGAN layer's channels
    disc_layers: int = Field(3, ge=1)

    @property
    def ndims(self) -> int:
        """Spatial dimensions of the convolutions: 3 in ``3d`` mode, else 2."""
        return 3 if self.mode == "3d" else 2

    @property
    def in_channels(self) -> int:
        """Input channels per time point: 3 adjacent slices in ``2.5d`` mode, else 1."""
        return 3 if self.mode == "2.5d" else 1


class SynthConfig(TrainSettings):
    """Everything that defines a synthesis training run.

    Losses (section 3.4): ``lambda_rec`` x L1 for every available source/target pair (eq. 1),
    ``lambda_cyc`` x the cycle L1 (eq. 3), ``lambda_adv`` x the LSGAN loss with one patch
    discriminator per sequence (eq. 2), and ``lambda_per`` x the VGG19 perceptual term only when
    ``perceptual_weights`` names a weight file (nothing is downloaded).
    """

    sequences: tuple[str, ...] = BRATS_SEQUENCES
    network: NetworkConfig = NetworkConfig()
    epochs: int = Field(1000, ge=1)
    steps_per_epoch: int = Field(1000, ge=1)  # paper: 1,000,000 steps of batch 1
    batch_size: int = Field(1, ge=1)
    crop: tuple[int, ...] | None = (192, 192)  # training crop (H, W) or (D, H, W); None: whole slice
    lr: float = Field(2e-4, gt=0)
    # constant: the paper's fixed rate; cosine: decays per epoch from lr to lr_min_factor x lr, which
    # lets a short CPU run settle instead of ending on the noise of a large rate
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min_factor: float = Field(0.05, gt=0, le=1)
    betas: tuple[float, float] = (0.9, 0.999)   # not stated in the paper; PyTorch's default, as the authors' code
    lambda_rec: float = Field(10.0, ge=0)
    # eq. 1's L1 (the paper), or the mean squared error: see losses.reconstruction_loss
    rec_loss: Literal["l1", "l2"] = "l1"
    lambda_cyc: float = Field(10.0, ge=0)
    lambda_adv: float = Field(1.0, ge=0)
    lambda_per: float = Field(0.01, ge=0)
    perceptual_weights: str | None = None      # VGG19 weights file; None: perceptual term off
    silence: tuple[int, int] = (1, 3)         # silence min..max sequences per training subject
    # fraction of each batch cropped around a voxel of the segmentation's lesion labels (the _seg file,
    # BraTS' and the simulator's), as nnU-Net oversamples foreground; 0 (the paper): uniform crops
    lesion_oversample: float = Field(0.0, ge=0, le=1)
    # draw a step's items from the training subjects that have both its source and its target, when
    # any do (False, the paper's batch of one: any subject with the source, so that an item without
    # the target feeds only the self-reconstruction, the cycle and the adversarial terms)
    paired_items: bool = False
    # intensity normalization of every volume (mridomain.synth.data): "percentile", the paper's min-max
    # after clipping at each volume's 0.5 / 99.5 head percentiles, or "median", each volume scaled by its
    # head's median to a level per sequence fitted on the training subjects (recorded in schema.json),
    # so that the lesion, which sets the top percentile of T1Gd and FLAIR, does not set their scale
    normalization: Literal["percentile", "median"] = "percentile"
    fractions: tuple[float, float, float] = (0.664, 0.074, 0.262)  # train/val/test by subject (830/93/328 of 1,251)
    val_subjects: int = Field(8, ge=1)        # validation subjects evaluated after every epoch
    val_slices: int = Field(16, ge=1)         # slices per validation subject (evenly spaced)

    @field_validator("sequences")
    @classmethod
    def _sequences_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError(f"need at least two distinct sequences, got {list(v)}")
        return tuple(s.lower() for s in v)

    @model_validator(mode="after")
    def _consistent(self) -> "SynthConfig":
        lo, hi = self.silence
        if not 0 <= lo <= hi < len(self.sequences):
            raise ValueError(f"silence {self.silence}: must satisfy 0 <= min <= max < {len(self.sequences)} "
                             "(every subject keeps at least one sequence)")
        if len(self.sequences) > self.network.code_dim:
            raise ValueError(f"{len(self.sequences)} sequences do not fit a code of length "
                             f"{self.network.code_dim}")
        if self.crop is not None and len(self.crop) != self.network.ndims:
            raise ValueError(f"crop {self.crop} must have {self.network.ndims} sizes in mode {self.network.mode}")
        if self.crop is not None and any(c % 4 for c in self.crop):
            raise ValueError(f"crop {self.crop}: sizes must be multiples of 4 (two 2x downsamplings)")
        pool = self.network.context_pool
        if self.crop is not None and pool and any(c % (pool * (1 if self.network.full_resolution else 4))
                                                  for c in self.crop):
            raise ValueError(f"crop {self.crop}: sizes must be multiples of the context branch's pooling "
                             f"({pool}{'' if self.network.full_resolution else ' x 4'})")
        return self


#: ``paper``: the published setting (authors' released widths, batch 1, 10^6 steps, 192 x 192 crops,
#: random silencing of 1-3 sequences). ``cpu``: same layout, narrow and short, for 2 CPU cores
#: (``cpu-fullres`` below: a generator of another shape for the same short runs).
PRESETS: dict[str, dict] = {
    "paper": {},
    "cpu": {
        # no ConvLSTM: it only links the time points of 4-D sequences, and with one time point it
        # cost 30 % of a step for nothing (bench/synth_bench.py); 4-D data needs lstm_layers >= 1
        "network": {"code_dim": 8, "bank_dim": 4, "enc_channels": (12, 24, 48), "dec_channels": (24, 12),
                    "n_res_enc": 3, "n_res_dec": 3, "lstm_layers": 0, "disc_channels": 16, "disc_layers": 2},
        # 64 x 64 crops of the slices (the paper trains on 192 x 192 crops of 240 x 240): a step costs
        # 0.4 of a whole 100 x 84 slice's; a large rate decayed with a cosine schedule instead of
        # 10^6 steps at 2e-4
        "epochs": 10, "steps_per_epoch": 120, "batch_size": 4, "crop": (64, 64), "lr": 1e-3,
        "lr_schedule": "cosine", "fractions": (0.7, 0.1, 0.2), "val_subjects": 3, "val_slices": 8,
        # L1 only (eq. 1 without the perceptual term): in a run of a few hundred to a few thousand
        # steps the adversarial and cycle terms did not raise the validation PSNR per step
        # (docs/synth.md) and cost 28 % of a step's CPU time (bench/synth_bench.py --compare terms);
        # the paper preset keeps both
        "lambda_adv": 0.0, "lambda_cyc": 0.0,
    },
}

#: ``cpu-fullres``: the cpu preset's crops and cosine schedule with a generator for short CPU runs that
#: is not the paper's: every layer at the image's resolution (no 4x-down bottleneck) and the encoder
#: conditioned on the source sequence's code (``source_code``), three 32-channel convolutions in, two
#: 32-channel HyperConvs and the output HyperConv out, no residual blocks and no instance
#: normalization, at four times the cpu rate. In 1,200 steps on simulated brains it learns every
#: translation far better than the paper's shape (bench/synth_convergence.py: 26.4 against 21.6 dB
#: validation PSNR; docs/synth.md). A step costs a third of the cpu preset's, so 16 epochs (1,920
#: steps) cost about half the cpu preset's 1,200, and they raised the synth demo's test PSNR from
#: 25.8 dB at 1,200 steps to 26.7 (docs/synth.md). The encoder also reads 16 Gaussian bumps of each
#: input channel's intensity (``intensity_bins``), which raised the demo's test PSNR on three seeds by
#: 0.23-0.90 dB for 8-32 % more CPU per step (bench/synth_bench.py --compare bins; docs/synth.md). Its
#: items come from the subjects that have both the step's source and target (``paired_items``): with
#: the cycle and adversarial terms off, an item without the target teaches only the self-reconstruction;
#: at no cost per step it raised the demo's test PSNR by 0.05-0.21 dB and its validation PSNR by
#: 0.11-0.35 dB on three seeds (docs/synth.md).
#: No ConvLSTM: 4-D (DCE) data needs ``network={"lstm_layers": 1}``, at full resolution.
#: bf16 mixed precision where the CPU computes bf16 natively (``cpu_amp="auto"``: AMX or AVX512-BF16;
#: float32 elsewhere, where emulated bf16 was 8.7x slower): 1.5x the float32 steps/s on AMX, with the
#: demo's figures within their seed-to-seed spread (docs/synth.md, "bf16 on CPUs that compute it").
#: One crop per step, four times the steps (7,680: 480 per epoch): on one thread a step of one 64 x 64
#: crop costs 0.38 of a step of four in bf16 and 0.28 in float32 (bench/synth_bench.py --compare
#: batch), so each ordered pair gets four times the updates for 1.1 (float32) to 1.5 (bf16) times the
#: steps' time; it raised the demo's test PSNR by 0.51-0.79 dB and SSIM by 0.008-0.019 on three seeds
#: (docs/synth.md, "One crop per step").
#: The median normalization (``normalization="median"``): with the paper's percentiles the head's
#: median in T1Gd and FLAIR varied by a coefficient of variation of 10 % between the demo's brains
#: (0.1 % to 0.6 % with the median's), set by a lesion no source shows; on the seed-0 demo it raised
#: eq. 5's M_d(T1Gd) on the rim from 0.977 to 0.9995 and the gain-matched PSNR from 29.3 to 30.5 dB
#: (docs/synth.md, "The median normalization").
PRESETS["cpu-fullres"] = {
    **PRESETS["cpu"], "lr": 4e-3, "epochs": 16, "batch_size": 1, "steps_per_epoch": 480,
    "paired_items": True, "cpu_amp": "auto", "normalization": "median",
    "network": {**PRESETS["cpu"]["network"], "norm": "none", "source_code": True, "full_resolution": True,
                "enc_channels": (32, 32, 32), "enc_kernels": (3, 3, 3), "n_res_enc": 0,
                "dec_channels": (32, 32), "dec_kernels": (3, 3, 3), "n_res_dec": 0, "intensity_bins": 16},
}


def make_config(preset: str = "cpu", **overrides) -> SynthConfig:
    """A preset's config with ``overrides`` applied (``network={...}`` updates the network fields)."""
    return SynthConfig.from_preset(PRESETS, preset, overrides, what="synthesis config", merge=("network",))
