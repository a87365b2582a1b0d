"""Mirror test-time averaging on trained IAP runs (issue 28): what a slice's left-right mirror adds.

    python bench/iap_mirror_tta.py CACHE RUN [RUN ...]

For each run, on the cache's test split, top-1 % per IAP of three readings: the slices themselves,
their mirrors (image rows mirrored, the k-space view kept, HFP <-> FFP read back), and the average
of the two readings' logits (what ``mirror_tta`` answers). The runs are read with ``mirror_tta``
switched off, so a run trained with it is scored the same way. Then how many slices of each series
description (protocol) get patient position right, by the slice's reading and by the average:
where the errors sit.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from mridomain.data.kspace import view_rows
from mridomain.iap.cache import open_cache, split_indices
from mridomain.iap.labels import mirror_output_map
from mridomain.iap.run import IAPRun


def main(cache_path: str, runs: list[str]) -> None:
    cache = open_cache(cache_path)
    idx = split_indices(cache, "test")
    slices = np.asarray(cache.images[idx], dtype=np.float32)
    mirrored = slices.copy()
    rows = slices.shape[1] - view_rows(cache.meta.get("kspace_view"))
    mirrored[:, :rows, :] = mirrored[:, :rows, ::-1]
    table = cache.table.iloc[idx].reset_index(drop=True)
    for run in runs:
        predictor = IAPRun.load(run)
        predictor.model.mirror_tta = False
        own = predictor.forward(slices, progress=False).logits
        mirror = predictor.forward(mirrored, progress=False).logits
        index, has_mirror = mirror_output_map(predictor.encoder)
        print(f"\n{run}: test split, {len(idx)} slices, top-1 % per slice")
        print("| IAP | slice | mirror | average |\n|---|---|---|---|")
        position_right = None
        for name, classes in predictor.classes.items():
            part = predictor.encoder.slices[name]
            local = index[part] - part.start
            read_back = mirror[name][:, local]
            average = np.where(has_mirror[part], 0.5 * (own[name] + read_back), own[name])
            truth = table[name].astype(str).to_numpy()
            scores = [100 * np.mean(np.asarray(classes)[q.argmax(1)] == truth) for q in (own[name], read_back, average)]
            print(f"| {name} | " + " | ".join(f"{s:.1f}" for s in scores) + " |")
            if name == "patient_position":
                position_right = {reading: np.asarray(classes)[q.argmax(1)] == truth
                                  for reading, q in (("slice", own[name]), ("average", average))}
        if position_right is not None and "series_description" in table:
            by = pd.DataFrame({"protocol": table["series_description"], **position_right})
            print("\npatient position right, by protocol (slices):")
            print(by.groupby("protocol").agg(slices=("slice", "size"), slice=("slice", "sum"),
                                             average=("average", "sum")).to_string())


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
