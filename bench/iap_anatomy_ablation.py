"""Issue 28: how much of the IAP network's accuracy does the simulator's anatomical variety cost?

Simulates the `make demo` archive (600 DBC-like patients, 3 slices each, seed 0) once per anatomy
count, each time with only that many bodies (``simulate(..., anatomies=N)``: patient i has patient
i mod N's whole anatomy; protocols, noise and everything else are drawn as usual; ``all``: every
patient their own, as the demo), prepares the cache as the demo does, trains the cpu preset (seed 0,
calibration skipped: top-1 does not depend on it) and prints Table 1's top-1 per slice (per series)
for every anatomy count side by side.

    OMP_NUM_THREADS=2 python bench/iap_anatomy_ablation.py /tmp/iap_anatomy 1,20,all

Everything lands under the work folder; a count whose ``result.json`` is there is not run again.
"""
import json
import sys
import time
from pathlib import Path

from mridomain.data import build_index, prepare_cache
from mridomain.iap import evaluate, train
from mridomain.iap.demo import DEMO_CACHE
from mridomain.sim.breast import simulate

PATIENTS, SLICES, SEED = 600, 3, 0
IAPS = ("manufacturer", "scanner_model", "field_strength", "flip_angle", "patient_position", "scan_options",
        "acquisition_matrix", "slice_thickness", "contrast_agent", "fov")


def run_arm(work: Path, anatomies: int | None) -> dict:
    """Simulate, index, cache, train and evaluate one anatomy count; its record."""
    name = "all" if anatomies is None else str(anatomies)
    out = work / f"anatomies_{name}"
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    load0 = open("/proc/loadavg").read().split()[:3]
    t0 = time.time()
    sim = simulate(out / "archive", n_patients=PATIENTS, seed=SEED, slices=SLICES, preset="dbc", phases=1,
                   anatomies=anatomies)
    bodies = int(sim.manifest["body_width_mm"].nunique())
    t1 = time.time()
    build_index(out / "archive" / "dicom", out=out / "index.parquet")
    prepare_cache(out / "index.parquet", out / "cache", seed=SEED, annotations=out / "archive" / "Annotation_Boxes.csv",
                  **DEMO_CACHE)
    t2 = time.time()
    # top-1 does not depend on the trust calibration (temperatures keep the argmax): skip its cost
    train(out / "cache", out / "run", preset="cpu", seed=SEED, progress=True, calibrate=False)
    t3 = time.time()
    rep = evaluate(out / "run", cache=out / "cache", split="test", out=out / "eval", progress=False)
    rows = {r["iap"]: r for r in rep.rows}
    rec = {"anatomies": name, "distinct_body_widths": bodies,
           "top1": {k: rows[k].get("top1") for k in IAPS if k in rows},
           "series_top1": {k: rows[k].get("series_top1") for k in IAPS if k in rows},
           "simulate_s": t1 - t0, "prepare_s": t2 - t1, "train_s": t3 - t2,
           "load_start": load0, "load_end": open("/proc/loadavg").read().split()[:3]}
    done.write_text(json.dumps(rec, indent=1, default=str))
    return rec


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/iap_anatomy")
    counts = [None if c == "all" else int(c) for c in (sys.argv[2] if len(sys.argv) > 2 else "1,20,all").split(",")]
    records = [run_arm(work, n) for n in counts]
    print(f"Table 1, top-1 % per slice (per series) on the test split, {PATIENTS} patients x {SLICES} slices, seed {SEED}")
    print("| IAP | " + " | ".join(f"{r['anatomies']} anatom{'y' if r['anatomies'] == '1' else 'ies'}"
                                    for r in records) + " |")
    print("|---|" + "---|" * len(records))
    for iap in IAPS:
        cells = [f"{100 * r['top1'][iap]:.1f} ({100 * r['series_top1'][iap]:.1f})" for r in records]
        print(f"| {iap.replace('_', ' ')} | " + " | ".join(cells) + " |")
    for r in records:
        print(f"anatomies {r['anatomies']}: {r['distinct_body_widths']} distinct body widths; simulate "
              f"{r['simulate_s']:.0f} s, index + cache {r['prepare_s']:.0f} s, train {r['train_s']:.0f} s; "
              f"load {r['load_start']} -> {r['load_end']}")


if __name__ == "__main__":
    main()
