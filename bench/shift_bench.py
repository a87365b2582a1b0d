"""Runs per minute of the domain-shift study: the local process pool against a serial loop, one run.

The same runs (the main experiment over several seeds on a two-domain set of 5 x 47 x 47 crops,
the demo's sample shape, cpu preset) are trained twice into fresh study folders: once with one
worker (a plain loop in this process, torch with its default threads) and once with the process
pool (one worker per core, one thread each). Both print wall time, runs per minute and the ratio,
with the load average, since the machine is shared.

    python bench/shift_bench.py [--seeds 4] [--patients 48] [--workers 2] [--epochs 12]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def make_dataset(folder: Path, patients: int, seed: int = 0) -> Path:
    """Two domains of ``patients`` crops each; label 1 = a bright blob, contrast set by the domain."""
    rng = np.random.default_rng(seed)
    rows = []
    for dom, gain in (("GE", 1.0), ("SIEMENS", 0.6)):
        for p in range(patients):
            label = int(p % 3 == 0)
            vol = rng.normal(300, 40, (5, 47, 47)).astype(np.float32)
            if label:
                r = rng.integers(6, 14)
                yy, xx = np.ogrid[:47, :47]
                vol[1:4][:, (yy - 23) ** 2 + (xx - 23) ** 2 < r * r] += 150 * gain
            path = folder / f"{dom}_{p:03d}.npy"
            np.save(path, vol)
            rows.append({"image": path.name, "label": label, "domain": dom, "patient_id": f"{dom}{p}"})
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def timed(manifest: Path, out: Path, seeds: int, workers: int, epochs: int) -> tuple[float, int]:
    from mridomain.shift import run_study

    t0 = time.perf_counter()
    # stratified: a throughput benchmark must not stop on a random test set without positives
    res = run_study(manifest, out, seeds=seeds, preset="cpu", epochs=epochs, workers=workers, progress=False,
                    report=False, stratify=True)
    if res.failed:
        raise SystemExit(f"{len(res.failed)} runs failed: {res.failed[0].get('error')}")
    return time.perf_counter() - t0, len(res.records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--patients", type=int, default=48, help="patients per domain")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shift_bench_"))
    try:
        manifest = make_dataset(tmp, args.patients)
        # warm the imports and the data reading once, outside both timings
        timed(manifest, tmp / "warm", 1, 1, 1)
        load0 = os.getloadavg()
        serial_s, n = timed(manifest, tmp / "serial", args.seeds, 1, args.epochs)
        load1 = os.getloadavg()
        pool_s, n_pool = timed(manifest, tmp / "pool", args.seeds, args.workers, args.epochs)
        load2 = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{n} runs ({args.seeds} seeds x 2 domains), {args.patients} patients per domain, 5x47x47 crops, "
          f"cpu preset, {args.epochs} epochs")
    print(f"serial loop (1 process)       : {serial_s:7.1f} s  {60 * n / serial_s:6.2f} runs/min")
    print(f"process pool ({args.workers} workers)      : {pool_s:7.1f} s  {60 * n_pool / pool_s:6.2f} runs/min")
    print(f"pool / serial throughput       : {serial_s / pool_s * n_pool / n:6.2f}x")
    print(f"load average before / between / after: {load0[0]:.2f} / {load1[0]:.2f} / {load2[0]:.2f}")


if __name__ == "__main__":
    main()
