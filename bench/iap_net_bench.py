"""CPU cost of candidate networks for the cpu preset: one training step and one evaluation batch.

Every candidate is an :class:`mridomain.iap.model.IAPNet` with the cpu preset's texture statistics,
residual input and k-space branch, timed in one process on the same random batch (batch 32 for a
training step: forward, backward, Adam; 128 slices for evaluation), as CPU seconds on one thread
so the figures hold on a loaded machine. Prints each candidate's cost and its ratio to the
current cpu preset; docs/iap.md gives the measured table.

    OMP_NUM_THREADS=1 python bench/iap_net_bench.py
"""
from __future__ import annotations

import json
import time

import torch

CANDIDATES = [("smallcnn", 224, 16), ("smallcnn", 192, 16), ("smallcnn", 160, 16), ("smallcnn", 128, 16), ("smallcnn", 160, 24),
              ("smallcnn", 224, 12), ("resnet18", 128, 32), ("resnet18", 160, 32)]


def main() -> None:
    from mridomain.iap.config import get_preset
    from mridomain.iap.model import IAPNet

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cpu = get_preset("cpu")
    image, kspace = torch.rand(32, 1, 224, 224), torch.randn(32, 2, 224)
    eval_image, eval_kspace = torch.rand(128, 1, 224, 224), torch.randn(128, 2, 224)
    rows = []
    for backbone, size, width in CANDIDATES:
        net = IAPNet(60, backbone=backbone, input_size=size, width=width, texture_stats=True,
                     residual_input=True, kspace_bins=224)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        net.train()
        for step in range(4):           # the first step is a warm-up
            if step == 1:
                c0 = time.process_time()
            loss = net(image, kspace).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_s = (time.process_time() - c0) / 3
        net.eval()
        with torch.no_grad():
            c0 = time.process_time()
            net(eval_image, eval_kspace)
            eval_s = time.process_time() - c0
        rows.append({"net": f"{backbone}@{size} width {width}", "params": sum(p.numel() for p in net.parameters()),
                     "train_cpu_s_per_batch32": round(train_s, 3), "eval_cpu_s_per_128": round(eval_s, 3),
                     "preset": (backbone, size, width) == (cpu.backbone, cpu.input_size, cpu.width)})
        print(json.dumps(rows[-1]), flush=True)
    ref = next((r for r in rows if r["preset"]), rows[0])
    for r in rows:
        print(f"{r['net']:28s} train step x{r['train_cpu_s_per_batch32'] / ref['train_cpu_s_per_batch32']:.2f}  "
              f"eval x{r['eval_cpu_s_per_128'] / ref['eval_cpu_s_per_128']:.2f} of the cpu preset's network")
    with open("/proc/loadavg") as fh:
        print("load average:", fh.read().strip())


if __name__ == "__main__":
    main()
