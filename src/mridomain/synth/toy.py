"""The paper's toy dataset (section 4.1, Fig. 3) and its Fig. 4 experiment.

Each subject has two "sequences" X1 and X2 of ``size x size``: a disc and two letters at identical
places, drawn with different intensities in the two sequences (one tissue, two contrasts). One letter
pair is the same letter (redundant tissue), the other pair differs (imaging-differentiation tissue);
the labels are the differing letter of X1 and that of X2 (26 classes each).

Fig. 4: a Seq2Seq generator is trained on X1 <-> X2, M_d(X1) = |X'_{2->1} - X1| and
M_d(X2) = |X'_{1->2} - X2| are computed for every subject, and a MONAI ResNet-18 learns the two labels
from [X1, X2] (baseline) or [X1, X2, M_d(X1), M_d(X2)] for growing training-set sizes.
"""
from __future__ import annotations

import functools
import string
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from mridomain.engine import Engine, StepContext, TrainSettings, TrainTask, epoch_batches, load_weights, validated
from mridomain.errors import InvalidArgumentError
from mridomain.synth.data import Subject, SynthData

__all__ = ["LETTERS", "letter_mask", "make_toy_dataset", "ToyExperimentConfig", "TOY_PRESETS",
           "ToyClassifierTask", "toy_synth_data", "run_toy_experiment", "ToyResult"]

LETTERS = string.ascii_uppercase
#: intensities (disc, letters) of the two sequences: the same tissues under two contrasts
TOY_INTENSITY = {"x1": (0.35, 0.9), "x2": (0.75, 0.2)}


@functools.lru_cache(maxsize=64)
def letter_mask(letter: str, height: int) -> np.ndarray:
    """A filled bold glyph, ``height`` pixels tall, rasterized from matplotlib's DejaVu Sans."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), letter, size=1.0, prop=FontProperties(family="DejaVu Sans", weight="bold"))
    v = path.vertices
    lo, hi = v.min(axis=0), v.max(axis=0)
    scale = (height - 1) / max(hi[1] - lo[1], 1e-6)
    width = max(1, int(np.ceil((hi[0] - lo[0]) * scale)) + 1)
    yy, xx = np.mgrid[0:height, 0:width]
    pts = np.c_[(xx.ravel() + 0.5) / scale + lo[0], (height - 1 - yy.ravel() + 0.5) / scale + lo[1]]
    return path.contains_points(pts).reshape(height, width)


def make_toy_dataset(n: int, size: int = 128, seed: int = 0, noise: float = 0.02
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images (n, 2, size, size) in [0, 1], labels (n, 2) letter indices of X1 / X2, shared (n,))``."""
    if n < 1 or size < 32:
        raise InvalidArgumentError(f"toy dataset needs n >= 1 and size >= 32, got n={n}, size={size}")
    rng = np.random.default_rng([seed, 13])
    images = np.zeros((n, 2, size, size), np.float32)
    labels = np.zeros((n, 2), np.int64)
    shared = np.zeros(n, np.int64)
    yy, xx = np.mgrid[0:size, 0:size]
    glyph = max(8, size // 4)
    for k in range(n):
        r = rng.uniform(0.36, 0.46) * size
        cy, cx = rng.uniform(size / 2 - 0.05 * size, size / 2 + 0.05 * size, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        same, a, b = rng.choice(26, 3, replace=False)
        shared[k], labels[k] = same, (a, b)
        # two glyph boxes side by side inside the disc, in random order, a little jitter; each glyph is
        # centred in its box, so both sequences draw their letters at the same places
        centers = []
        for side in rng.permutation([-1, 1]):
            centers.append((cy + rng.uniform(-0.06, 0.06) * size,
                            cx + side * 0.8 * glyph + rng.uniform(-0.02, 0.02) * size))
        for s, seq in enumerate(("x1", "x2")):
            disc_value, letter_value = TOY_INTENSITY[seq]
            img = np.where(disc, disc_value, 0.0).astype(np.float32)
            for (yc, xc), letter in zip(centers, (same, (a, b)[s])):
                m = letter_mask(LETTERS[letter], glyph)
                h, w = m.shape
                y0, x0 = int(round(yc - h / 2)), int(round(xc - w / 2))
                ys, xs = slice(max(y0, 0), min(y0 + h, size)), slice(max(x0, 0), min(x0 + w, size))
                sub = m[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
                img[ys, xs] = np.where(sub, letter_value, img[ys, xs])
            img += rng.normal(0, noise, img.shape).astype(np.float32) * disc
            images[k, s] = np.clip(img, 0, 1)
    return images, labels, shared


def toy_synth_data(images: np.ndarray, prefix: str = "toy") -> SynthData:
    """Toy subjects as :class:`SynthData` of the sequences ``x1``, ``x2`` (one slice each)."""
    subjects = [Subject(f"{prefix}{k:05d}", {"x1": images[k, 0][None, None], "x2": images[k, 1][None, None]},
                        affine=np.eye(4)) for k in range(len(images))]
    return SynthData(("x1", "x2"), subjects, [], None)


class ToyExperimentConfig(TrainSettings):
    """Sizes of the Fig. 4 experiment and of its ResNet-18 (the engine's settings are its own)."""

    size: int = Field(128, ge=32)
    n_train: int = Field(9000, ge=10)
    n_val: int = Field(1000, ge=10)
    n_test: int = Field(10000, ge=10)
    train_sizes: tuple[int, ...] = (3000, 4000, 5000, 6000, 7000, 8000, 9000)
    synth_preset: str = "paper"
    synth_epochs: int = Field(10, ge=1)     # paper: "we train the Seq2Seq generator with 10 epochs"
    synth_steps_per_epoch: int | None = None  # None: one pass over the training subjects
    batch_size: int = Field(128, ge=1)      # paper: ResNet-18 batch size 128
    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(50, ge=1)


TOY_PRESETS: dict[str, dict] = {
    "paper": {},
    "cpu": {"size": 64, "n_train": 800, "n_val": 200, "n_test": 1000, "train_sizes": (200, 400, 800),
            "synth_preset": "cpu", "synth_epochs": 4, "synth_steps_per_epoch": 60, "batch_size": 64,
            "epochs": 8},
}


class ToyClassifierTask(TrainTask):
    """MONAI ResNet-18 with two 26-way heads (the differing letter of X1 and of X2)."""

    def __init__(self, config: ToyExperimentConfig, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
                 y_val: np.ndarray):
        self.config, self.x, self.y, self.x_val, self.y_val = config, x, y, x_val, y_val

    def build_modules(self) -> dict[str, torch.nn.Module]:
        """MONAI ResNet-18 (2-D) with 52 outputs: the two 26-way heads side by side."""
        from monai.networks.nets import resnet18

        return {"model": resnet18(spatial_dims=2, n_input_channels=self.x.shape[1], num_classes=52)}

    def build_optimizers(self, modules):
        """Adam over the network's parameters at the config's ``lr``."""
        return {"adam": torch.optim.Adam(modules["model"].parameters(), lr=self.config.lr)}

    def train_batches(self, epoch: int, rank: int, world_size: int):
        """This rank's batches of training indices for ``epoch`` (:func:`~mridomain.engine.epoch_batches`)."""
        return epoch_batches(len(self.x), self.config.batch_size, self.config.seed, epoch, rank=rank,
                             world_size=world_size)

    @staticmethod
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the X1 head (logits 0-25) plus that of the X2 head (logits 26-51)."""
        ce = torch.nn.functional.cross_entropy
        return ce(logits[:, :26], y[:, 0]) + ce(logits[:, 26:], y[:, 1])

    def training_step(self, batch: np.ndarray, ctx: StepContext) -> dict[str, float]:
        """The two heads' loss on one batch of training images and one Adam step."""
        x = ctx.to_device(torch.from_numpy(self.x[batch]))
        y = torch.from_numpy(self.y[batch]).to(ctx.device)
        loss = self.loss(ctx.modules["model"](x), y)
        ctx.backward(loss)
        ctx.step("adam")
        return {"loss": float(loss.detach()), "batch_size": float(len(batch))}

    def validate(self, ctx: StepContext) -> dict[str, float]:
        """Validation loss and each head's accuracy (:func:`predict_accuracy`)."""
        acc, loss = predict_accuracy(ctx.unwrapped("model"), self.x_val, self.y_val, ctx.device)
        return {"val_loss": loss, "val_acc_x1": acc[0], "val_acc_x2": acc[1]}


@torch.no_grad()
def predict_accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, device, batch: int = 256
                     ) -> tuple[tuple[float, float], float]:
    """((accuracy of the X1 head, of the X2 head), mean loss) of ``model`` on ``x`` and labels ``y``,
    in batches of ``batch``; leaves the model in eval mode."""
    model.eval()
    right, losses = np.zeros(2), []
    for s in range(0, len(x), batch):
        logits = model(torch.from_numpy(x[s:s + batch]).to(device)).float().cpu()
        yt = torch.from_numpy(y[s:s + batch])
        losses.append(float(ToyClassifierTask.loss(logits, yt)) * len(yt))
        right += [(logits[:, :26].argmax(1) == yt[:, 0]).sum().item(),
                  (logits[:, 26:].argmax(1) == yt[:, 1]).sum().item()]
    return (right[0] / len(x), right[1] / len(x)), sum(losses) / len(x)


def _dmaps(run, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """(n, 2, H, W): M_d(X1) = |X'_{2->1} - X1| and M_d(X2) = |X'_{1->2} - X2| (S = 2: one other)."""
    from mridomain.synth.model import synthesize

    out = np.zeros_like(images)
    code_dim = run.config.network.code_dim
    for s in range(0, len(images), batch):
        chunk = images[s:s + batch]
        vol = {0: chunk[:, 0][None], 1: chunk[:, 1][None]}   # (T=1, S=n, H, W): subjects as slices
        gen_1 = synthesize(run.generator, vol[1], 1, {0: 1}, code_dim, run.device)[0][0]
        gen_2 = synthesize(run.generator, vol[0], 0, {1: 1}, code_dim, run.device)[1][0]
        out[s:s + batch, 0] = np.abs(gen_1 - chunk[:, 0])
        out[s:s + batch, 1] = np.abs(gen_2 - chunk[:, 1])
    return out


@dataclass
class ToyResult:
    """What :func:`run_toy_experiment` wrote: the Fig. 4 curve (accuracy per training size and input)
    and the seconds it took."""

    out: Path
    curve: pd.DataFrame   # train_size, inputs, acc_x1, acc_x2
    seconds: float

    def to_markdown(self) -> str:
        """The Fig. 4 curve as a Markdown table."""
        from mridomain.report import df_to_markdown

        return df_to_markdown(self.curve.round(4))


def run_toy_experiment(out: str | Path, preset: str = "cpu", seed: int = 0, device: str | None = None,
                       progress: bool = True, **overrides) -> ToyResult:
    """Simulate the toy dataset, train Seq2Seq on it and run Fig. 4 (Python twin of ``synth toy``).

    Writes ``toy_{train,val,test}.npz``, ``synth_run/``, ``fig3_examples.png``, ``fig4.csv``,
    ``fig4.png`` and ``report.html`` to ``out``.
    """
    from mridomain.report import Section, write_html_report
    from mridomain.synth.config import make_config
    from mridomain.synth.differentiation import overlay_figure
    from mridomain.synth.model import load_run
    from mridomain.synth.training import SynthTask

    if preset not in TOY_PRESETS:
        raise InvalidArgumentError(f"unknown toy preset {preset!r} (choose from {sorted(TOY_PRESETS)})")
    cfg = validated(ToyExperimentConfig, {**TOY_PRESETS[preset], "seed": seed, "device": device, **overrides},
                    where=f"toy experiment ({preset})")
    if max(cfg.train_sizes) > cfg.n_train:
        raise InvalidArgumentError(f"train_sizes {cfg.train_sizes} exceed n_train {cfg.n_train}")
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = {}
    for k, (name, n) in enumerate((("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test))):
        parts[name] = make_toy_dataset(n, cfg.size, seed=seed * 3 + k)
        np.savez_compressed(out / f"toy_{name}.npz", images=parts[name][0], labels=parts[name][1],
                            shared=parts[name][2], letters=np.array(list(LETTERS)))
    steps = cfg.synth_steps_per_epoch
    synth_cfg = make_config(cfg.synth_preset, sequences=("x1", "x2"), epochs=cfg.synth_epochs, seed=seed,
                            device=device, silence=(0, 0), crop=None, network={"mode": "2d"},
                            **({"steps_per_epoch": steps} if steps else {}))
    if not steps:
        synth_cfg = synth_cfg.updated(steps_per_epoch=max(1, cfg.n_train // synth_cfg.batch_size))
    train_data, val_data = toy_synth_data(parts["train"][0]), toy_synth_data(parts["val"][0], "val")
    task = SynthTask(synth_cfg, train_data, val_data, np.ones((cfg.n_train, 2), bool),
                     {"train": [], "val": [], "test": []})
    Engine(synth_cfg, out / "synth_run", progress=progress).fit(task)
    run = load_run(out / "synth_run", device=device)
    maps = {name: _dmaps(run, parts[name][0]) for name in parts}
    example = toy_synth_data(parts["test"][0][:1], "test").subjects[0]
    overlay_figure(example, {"x1": maps["test"][0, 0][None], "x2": maps["test"][0, 1][None]}, z=0
                   ).savefig(out / "fig3_examples.png", dpi=90)
    rows = []
    for n in cfg.train_sizes:
        for label, with_md in (("X1+X2", False), ("X1+X2+M_d", True)):
            def inputs(name: str, count: int | None = None, with_md: bool = with_md) -> np.ndarray:
                x = parts[name][0][:count]
                return np.concatenate([x, maps[name][:count]], axis=1) if with_md else x
            clf_task = ToyClassifierTask(cfg, inputs("train", n), parts["train"][1][:n], inputs("val"),
                                         parts["val"][1])
            folder = out / "classifiers" / f"{label.replace('+', '_')}_{n}"
            Engine(cfg.updated(monitor="val_loss"), folder, progress=progress).fit(clf_task)
            model = clf_task.build_modules()["model"]
            load_weights(model, folder / "model.safetensors")
            from mridomain.engine import resolve_device

            dev = resolve_device(device)
            (a1, a2), _ = predict_accuracy(model.to(dev), inputs("test"), parts["test"][1], dev)
            rows.append({"train_size": n, "inputs": label, "acc_x1": a1, "acc_x2": a2})
    curve = pd.DataFrame(rows)
    curve.to_csv(out / "fig4.csv", index=False)
    fig = _fig4(curve)
    fig.savefig(out / "fig4.png", dpi=90)
    result = ToyResult(out, curve, time.perf_counter() - t0)
    write_html_report(out / "report.html", f"Toy dataset and Fig. 4 ({preset} preset)", [
        Section("Fig. 3: the toy subjects and their M_d",
                text=f"{cfg.n_train}/{cfg.n_val}/{cfg.n_test} subjects of {cfg.size}x{cfg.size}; a disc and two "
                     "letters in both sequences, one letter pair differs. M_d from a Seq2Seq generator "
                     f"trained {cfg.synth_epochs} epochs ({cfg.synth_preset} network).",
                figures=[("test subject 0: X1, X2 and their M_d", out / "fig3_examples.png")]),
        Section("Fig. 4: 26-class accuracy of the differing letters on the test set",
                text="MONAI ResNet-18 on [X1, X2] (baseline) or [X1, X2, M_d(X1), M_d(X2)], best validation epoch.",
                tables=[curve.round(4)], figures=[("accuracy against training-set size", out / "fig4.png")]),
    ], subtitle=f"seed {seed}; {result.seconds:.0f} s")
    return result


def _fig4(curve: pd.DataFrame):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for col, color in (("acc_x1", "tab:blue"), ("acc_x2", "tab:orange")):
        for label, style in (("X1+X2", ":"), ("X1+X2+M_d", "-")):
            sel = curve[curve["inputs"] == label]
            ax.plot(sel["train_size"], sel[col], style, color=color, marker="o",
                    label=f"{col[-2:].upper()} {'Baseline' if label == 'X1+X2' else 'Baseline+M_d'}")
    ax.set(xlabel="training samples", ylabel="26-class accuracy", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
