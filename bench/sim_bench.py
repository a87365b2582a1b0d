"""Benchmark the simulator: N patients x K slices (DBC preset) with W workers, plus a stage breakdown.

    .venv/bin/python bench/sim_bench.py                 # 100 patients x 16 slices, 2 workers
    .venv/bin/python bench/sim_bench.py --patients 20 --workers 1

Target (issue 3): 100 patients x 16 slices (1 phase) in under 120 s on 2 cores. Prints the wall time,
its ratio to the target, images/s and the CPU seconds spent per stage (summed over workers).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from mridomain.sim.breast import simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--phases", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-s", type=float, default=120.0)
    ap.add_argument("--keep", type=Path, default=None, help="write here and keep the output")
    args = ap.parse_args()
    out = args.keep or Path(tempfile.mkdtemp(prefix="sim_bench_"))
    load0 = os.getloadavg()
    try:
        t0 = time.perf_counter()
        res = simulate(out, n_patients=args.patients, seed=args.seed, slices=args.slices,
                       phases=args.phases, workers=args.workers, progress=True)
        wall = time.perf_counter() - t0
        n = res.n_files
        size_mb = sum(f.stat().st_size for f in (out / "dicom").rglob("*.dcm")) / 2 ** 20
        print(f"\n{args.patients} patients x {args.slices} slices x {args.phases} phase(s) = {n} images, "
              f"{args.workers} worker(s): {wall:.1f} s wall ({n / wall:.1f} images/s, {size_mb:.0f} MiB)")
        load1 = os.getloadavg()
        print(f"load average (1/5/15 min) before {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, after "
              f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} on {os.cpu_count()} cores (others' jobs slow it)")
        print(f"target {args.target_s:.0f} s -> ratio {wall / args.target_s:.2f} "
              f"({'meets' if wall <= args.target_s else 'misses'} the target)")
        total = sum(res.stage_seconds.values())
        print("stage breakdown (CPU seconds summed over workers):")
        for k, v in sorted(res.stage_seconds.items(), key=lambda kv: -kv[1]):
            print(f"  {k:>14}: {v:7.1f} s  {100 * v / max(total, 1e-9):5.1f} %  {1000 * v / max(n, 1):6.1f} ms/image")
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
