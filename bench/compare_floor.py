"""Does ``compare`` read model error as shift? Same-simulator data against its noise floors.

The run's test split (same simulator, same patients' distribution, never trained on) is compared
with the run's training cache: no IAP and no image-feature distance should be above its noise
floor. Prints compare's summary and per-IAP table.

    python bench/compare_floor.py RUN [--cache CACHE]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--cache", type=Path, default=None, help="the run's cache (default: its source_cache)")
    args = ap.parse_args()
    from mridomain.iap import compare
    from mridomain.iap import IAPPredictor
    from mridomain.iap.cache import open_cache, split_indices

    cache_path = args.cache or Path(IAPPredictor.load(args.run).preprocess["source_cache"])
    cache = open_cache(cache_path)
    idx = split_indices(cache, "test")
    test = SimpleNamespace(images=np.asarray(cache.images[idx]), table=cache.table.iloc[idx])
    res = compare(cache_path, test, args.run, None, progress=False)
    print(res.to_markdown())
    print(f"load average: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
