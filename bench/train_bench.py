"""Training / inference throughput: our memmapped slice cache vs the reference PNG pipeline.

Both pipelines feed the same network (the paper's one-channel ResNet-18, MONAI, 224 x 224) with
the same batch size in the same process, so the ratios isolate the input pipeline:

* ours: batches sliced from ``images.npy`` (float16 memmap, already 224 x 224 and normalized),
  one fancy index per batch (``mridomain.iap.training.MemmapBatches``);
* reference (a plain reimplementation of the authors' loader): one PNG per slice at its
  original size, decoded with PIL, resized to 224 and scaled per item in a torch ``Dataset``,
  collated by a ``DataLoader``.

It also times the input pipelines alone (no network), where the difference is not hidden behind
the network's compute. Synthetic images in a temporary folder; runs in a few minutes on 2 cores.

    python bench/train_bench.py [--n 192] [--batch 32] [--source 512]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mridomain.data import write_slice_cache
from mridomain.iap.config import IAPConfig
from mridomain.iap.labels import LabelEncoder
from mridomain.iap.model import build_model, iap_loss
from mridomain.iap.training import MemmapBatches

IAPS = [{"name": "manufacturer", "kind": "categorical", "unit": None},
        {"name": "tr", "kind": "continuous", "unit": "ms"}]


class PNGDataset(Dataset):
    """The reference way: decode + resize + scale every item, every epoch."""

    def __init__(self, files: list[Path], cat: np.ndarray, cont: np.ndarray, size: int):
        self.files, self.cat, self.cont, self.size = files, cat, cont, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = Image.open(self.files[i]).convert("F").resize((self.size, self.size), Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32)
        x = x / max(float(x.max()), 1e-6)
        return torch.from_numpy(x)[None], torch.from_numpy(self.cat[i]), torch.from_numpy(self.cont[i])


def make_data(root: Path, n: int, source: int, size: int) -> tuple[list[Path], Path, pd.DataFrame]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:source, 0:source] / source
    files, small = [], np.empty((n, size, size), dtype=np.float32)
    (root / "png").mkdir(parents=True)
    for i in range(n):
        img = (np.exp(-((xx - 0.5) ** 2 + (yy - 0.6) ** 2) / 0.08) * rng.uniform(0.5, 1.0)
               + rng.normal(0, 0.05, (source, source)))
        img = np.clip(img, 0, None)
        u16 = (img / img.max() * 65535).astype(np.uint16)           # 16-bit PNG, as MR is stored
        f = root / "png" / f"{i:05d}.png"
        Image.fromarray(u16).save(f)
        files.append(f)
        r = np.asarray(Image.fromarray(u16.astype(np.float32), mode="F").resize(
            (size, size), Image.Resampling.BILINEAR))
        small[i] = r / max(float(r.max()), 1e-6)
    table = pd.DataFrame({"split": "train", "manufacturer": rng.choice(["GE", "SIEMENS"], n),
                          "tr": rng.uniform(3.5, 7.4, n)})
    t0 = time.perf_counter()
    write_slice_cache(root / "cache", small, table, IAPS)
    print(f"(one-off) writing the 224 cache of {n} slices: {time.perf_counter() - t0:.2f} s "
          f"(excluding decoding; ours pays decode+resize once, the reference every epoch)")
    return files, root / "cache", table


def time_loader(loader, model=None, optimizer=None, encoder=None, train: bool = True) -> tuple[int, float]:
    """(images, seconds) over one pass; the first batch is a warm-up and not counted."""
    n, t0 = 0, None
    for b, batch in enumerate(loader):
        # MemmapBatches also yields the (here empty) k-space view: image, view, cat, cont
        x, c, r = batch[0], batch[-2], batch[-1]
        if model is not None:
            if train:
                model.train()
                optimizer.zero_grad(set_to_none=True)
                loss, _ = iap_loss(model(x), c, r, encoder)
                loss.backward()
                optimizer.step()
            else:
                model.eval()
                with torch.no_grad():
                    model(x)
        if b == 0:
            t0 = time.perf_counter()
            continue
        n += len(x)
    return n, (time.perf_counter() - t0) if t0 is not None else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=192, help="images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--source", type=int, default=512, help="side of the PNGs on disk")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.n} images, batch {args.batch}, "
          f"ResNet-18 at {args.size} x {args.size}, PNGs {args.source} x {args.source}")
    with tempfile.TemporaryDirectory() as tmp:
        files, cache_dir, table = make_data(Path(tmp), args.n, args.source, args.size)
        images = np.load(cache_dir / "images.npy", mmap_mode="r")
        enc = LabelEncoder.fit(table, IAPS)
        cat, cont = enc.encode(table)
        idx = np.arange(args.n)

        halves = np.array_split(idx, 2)

        def ours(part, shuffle=True):
            return DataLoader(MemmapBatches(images, halves[part], cat, cont, args.batch, shuffle=shuffle),
                              batch_size=None, num_workers=0)

        def reference(part, shuffle=True):
            h = halves[part]
            ds = PNGDataset([files[i] for i in h], cat[h], cont[h], args.size)
            return DataLoader(ds, batch_size=args.batch, shuffle=shuffle, num_workers=0)

        cfg = IAPConfig(backbone="resnet18", input_size=args.size)
        model = build_model(cfg, enc, in_mean=0.3, in_std=0.3)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        rows = []
        for what, kw in (("input pipeline only", {}),
                         ("training (fwd+bwd+Adam)", dict(model=model, optimizer=opt, encoder=enc, train=True)),
                         ("inference", dict(model=model, train=False))):
            shuffle = what != "inference"
            # A B B A order on two halves of the data: the machine is shared, so load drifts;
            # interleaving cancels a linear drift instead of handing it to whichever runs second.
            runs = [("a", ours(0, shuffle)), ("b", reference(0, shuffle)), ("b", reference(1, shuffle)),
                    ("a", ours(1, shuffle))]
            tot = {"a": [0, 0.0], "b": [0, 0.0]}
            for key, loader in runs:
                n_img, sec = time_loader(loader, **kw)
                tot[key][0] += n_img
                tot[key][1] += sec
            a, b = tot["a"][0] / tot["a"][1], tot["b"][0] / tot["b"][1]
            rows.append((what, a, b))
            print(f"{what:26s} ours {a:9.1f} img/s   reference PNG {b:9.1f} img/s   ratio {a / b:6.2f}x",
                  flush=True)
    print("\nSame process, same model and batch size, A-B-B-A interleaved; num_workers=0 for both "
          "(2 cores: loader workers would compete with the network for the same cores).")


if __name__ == "__main__":
    main()
