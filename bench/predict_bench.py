"""Throughput of ``predict``, from DICOM on disk to the output table, per engine (issue 28).

In one run, on the same inputs (series folders of simulated DBC-like DICOM), slices per second of:

- ``reference``: predict as it was before issue 28 (PyTorch, one input at a time, no read-ahead:
  ``chunk_slices=1, read_ahead_inputs=0``, which reproduces that table bit for bit);
- ``torch``: predict now on PyTorch (inputs gathered into chunks of 64 slices, read ahead);
- ``onnx``: the same on ONNX Runtime (the run's model.onnx, fp32);
- ``onnx-int8``: the same on the dynamically quantized model.int8.onnx (``--no-int8`` skips it);

with the ratios, where the time of the reference goes (header scan, pixel decoding, preprocessing,
network, the rest: tables and verdicts), the network alone on each engine, whether the top-1
answers of every categorical IAP are identical to PyTorch's, and, per IAP, top-1 accuracy against
the DICOM headers for fp32 and int8. Each pipeline runs ``--repeats`` times in turn and the fastest
run counts (the machine is shared; the load average is printed before and after).

By default the bench simulates ``--patients`` patients (``--slices`` slices each) and trains the cpu
preset for ``--epochs`` epoch(s) in ``--workdir`` (kept, and reused by ``--reuse``): a network
trained that briefly is as fast as a trained one but its answers are poor, so the accuracy rows
measure agreement between engines, not the model. ``--run RUN --inputs FOLDER...`` benches a
trained run (e.g. ``demo_out/run`` and the demo's DICOM folders) instead.

    python bench/predict_bench.py [--patients 100] [--slices 3] [--epochs 1] [--repeats 2]
    python bench/predict_bench.py --memory        # predict's memory per input (issue 14)
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from mridomain.iap import predict_paths, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PIPELINES = {
    "reference": dict(engine="torch", chunk_slices=1, read_ahead_inputs=0),
    "torch": dict(engine="torch"),
    "onnx": dict(engine="onnx"),
    "onnx-int8": dict(engine="onnx-int8"),
}


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _bench_data(workdir: Path, patients: int, slices: int, epochs: int, reuse: bool) -> tuple[Path, list[Path]]:
    from mridomain.data import build_index, prepare_cache
    from mridomain.sim import simulate

    run = workdir / "run"
    if not (reuse and (run / "model.safetensors").exists()):
        print(f"simulating {patients} patients x {slices} slices and training the cpu preset for {epochs} "
              f"epoch(s) in {workdir} (load {_load()})", flush=True)
        simulate(workdir / "archive", n_patients=patients, seed=0, slices=slices, preset="dbc", phases=1)
        build_index(workdir / "archive" / "dicom", out=workdir / "index.parquet")
        prepare_cache(workdir / "index.parquet", workdir / "cache", slices_per_series=None, size=224,
                      normalization="max255", seed=0, kspace_view=True)     # as make demo prepares it
        print(train(workdir / "cache", run, preset="cpu", epochs=epochs, seed=0, progress=False).summary())
    index = pd.read_parquet(workdir / "index.parquet")
    return run, sorted({(workdir / files[0]).parent for files in index["files"]})   # paths may be relative


def _stages(run: Path, folders: list[Path]) -> dict[str, float]:
    """Seconds of the reference's parts on the inputs, each timed alone: header scan, pixel
    decoding, preprocessing (resize + normalization), and the network on each engine."""
    from mridomain.data.cache import preprocess_slices
    from mridomain.iap import IAPRun
    from mridomain.iap.inference import network_inputs
    from mridomain.iap.model import reads_kspace
    from mridomain.io import iter_candidate_files, read_dicom_volume, scan_dicom_files

    t = time.perf_counter()
    volumes = [v for f in folders for v in scan_dicom_files(list(iter_candidate_files(f)))]
    scan = time.perf_counter() - t
    t = time.perf_counter()
    pixels = [np.asarray(read_dicom_volume(v).pixels, dtype=np.float32) for v in volumes]
    decode = time.perf_counter() - t
    torch_run = IAPRun.load(run, engine="torch")
    t = time.perf_counter()
    images = [preprocess_slices(p, torch_run.preprocess["size"], torch_run.preprocess["normalization"],
                                torch_run.preprocess.get("kspace_view")) for p in pixels]
    preprocess = time.perf_counter() - t
    stages = {"header scan": scan, "pixel decoding": decode, "preprocessing": preprocess}
    stack = np.concatenate(images)
    for name in ("torch", "onnx", "onnx-int8"):
        if name == "onnx-int8" and not (run / "model.int8.onnx").exists():
            continue
        predictor = IAPRun.load(run, engine=name)
        predictor.forward(stack[:8])
        with_kspace = reads_kspace(predictor.model)
        t = time.perf_counter()
        for start in range(0, len(stack), 256):
            predictor.network(network_inputs(stack, slice(start, start + 256), predictor.preprocess.get("kspace_view"),
                                             with_kspace))
        stages[f"network alone, {name} (batches of 256)"] = time.perf_counter() - t
    return stages | {"n_slices": len(stack)}


def _answers(table: pd.DataFrame, iaps: list[str]) -> pd.DataFrame:
    return table[table["level"] == "slice"][iaps].reset_index(drop=True).astype(str)


def _accuracy(table: pd.DataFrame, iaps: list[str]) -> dict[str, float]:
    s = table[table["level"] == "slice"]
    out = {}
    for iap in iaps:
        truth = s.get(f"true_{iap}")
        if truth is None or truth.isna().all():
            continue
        known = truth.notna()
        out[iap] = 100.0 * float((s.loc[known, iap].astype(str) == truth[known].astype(str)).mean())
    return out


def throughput(args: argparse.Namespace) -> None:
    from mridomain.iap.runtime import onnx_missing, quantize_run

    workdir = Path(args.workdir)
    if args.run is not None:
        run, folders = Path(args.run), [Path(p) for p in args.inputs]
    else:
        run, folders = _bench_data(workdir, args.patients, args.slices, args.epochs, args.reuse)
    if onnx_missing(need_export=True):
        sys.exit(f"predict_bench: {onnx_missing(need_export=True)}")
    pipelines = dict(PIPELINES)
    if args.no_int8:
        pipelines.pop("onnx-int8")
    else:
        quantize_run(run)
    print(f"load average before: {_load()}; torch threads {__import__('torch').get_num_threads()}; "
          f"{len(folders)} series folders; run {run}", flush=True)
    stages = _stages(run, folders)
    n = stages.pop("n_slices")
    tables, best = {}, {name: float("inf") for name in pipelines}
    for kw in pipelines.values():                           # warm-up: imports, sessions, caches
        predict_paths(run, folders[:2], out=None, progress=False, **kw)
    for _ in range(args.repeats):
        for name, kw in pipelines.items():
            gc.collect()
            t = time.perf_counter()
            result = predict_paths(run, folders, out=None, progress=False, **kw)
            best[name] = min(best[name], time.perf_counter() - t)
            tables[name] = result
    print(f"load average after:  {_load()}")
    n_slices = len(tables["reference"].slices)
    print(f"\n{n_slices} slices in {len(folders)} series, DICOM on disk -> predictions table "
          f"(fastest of {args.repeats}):\n")
    print("| pipeline | seconds | slices/s | vs reference | vs torch |\n|---|---|---|---|---|")
    for name in pipelines:
        rate = n_slices / best[name]
        print(f"| {name} | {best[name]:.2f} | {rate:.1f} | {best['reference'] / best[name]:.2f}x | "
              f"{best['torch'] / best[name]:.2f}x |")
    print(f"\nwhere the reference's time goes ({n} slices, each part timed alone):\n")
    print("| part | seconds | share of reference |\n|---|---|---|")
    parts = ("header scan", "pixel decoding", "preprocessing", "network alone, torch (batches of 256)")
    for part in parts:
        print(f"| {part} | {stages[part]:.2f} | {100 * stages[part] / best['reference']:.0f} % |")
    rest = best["reference"] - sum(stages[p] for p in parts)
    print(f"| the rest: per-input forward calls, domain scores, tables, verdicts, joint decoding | {rest:.2f} | "
          f"{100 * rest / best['reference']:.0f} % |")
    print("\nthe network alone:\n\n| engine | images/s | vs torch |\n|---|---|---|")
    torch_net = stages["network alone, torch (batches of 256)"]
    for key, value in stages.items():
        if key.startswith("network alone"):
            print(f"| {key.split(', ')[1].split(' ')[0]} | {n / value:.1f} | {torch_net / value:.2f}x |")
    iaps = tables["reference"].iaps
    ref = _answers(tables["torch"].table, iaps)
    print("\ntop-1 answers against PyTorch's (slices that differ, per IAP):")
    for name in pipelines:
        if name == "torch":
            continue
        got = _answers(tables[name].table, iaps)
        differ = {iap: int((got[iap] != ref[iap]).sum()) for iap in iaps}
        verdict = "identical" if not any(differ.values()) else f"differ: {differ}"
        print(f"  {name}: {verdict} ({len(ref)} slices x {len(iaps)} IAPs)")
    if "onnx-int8" in pipelines:
        fp32, int8 = _accuracy(tables["onnx"].table, iaps), _accuracy(tables["onnx-int8"].table, iaps)
        print("\nper-IAP top-1 accuracy against the DICOM headers, fp32 vs int8 "
              + ("(a briefly trained bench run: agreement, not model quality)" if args.run is None else "")
              + ":\n\n| IAP | fp32 % | int8 % | change (points) |\n|---|---|---|---|")
        for iap in fp32:
            print(f"| {iap} | {fp32[iap]:.1f} | {int8[iap]:.1f} | {int8[iap] - fp32[iap]:+.1f} |")


# ---- memory (issue 14) ----------------------------------------------------------------------------

def _traced(func):
    gc.collect()
    tracemalloc.start()
    value = func()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, value


def memory(args: argparse.Namespace) -> None:
    """Memory of ``predict`` per input: what it holds beyond its output rows.

    ``predict_paths`` runs twice (``--small`` and ``--large`` inputs, each a NIfTI volume of
    ``--mem-slices`` slices) under tracemalloc; the growth of the peak per extra input is compared
    with the growth of the returned table and with the same rows gathered as python dicts and
    turned into one DataFrame at the end, the way predict kept them before issue 14."""
    import nibabel as nib

    from test_iap_utils import make_cache  # the tests' tiny learnable cache

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = root / "run"
        train(make_cache(root / "cache", n=48, size=16), run, preset="cpu", epochs=1, seed=0, progress=False,
              input_size=16, width=4, batch_size=16)
        rng = np.random.default_rng(0)
        volumes = []
        for i in range(args.large):
            path = root / "in" / f"v{i:04d}.nii"
            path.parent.mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(rng.random((32, 32, args.mem_slices)).astype(np.float32), np.eye(4)), str(path))
            volumes.append(path)
        predict_paths(run, volumes[:2], out=None, progress=False)   # imports and caches warmed up
        runs = {}
        for n in (args.small, args.large):
            peak, result = _traced(lambda n=n: predict_paths(run, volumes[:n], out=None, progress=False))
            records = result.table.to_dict("records")
            dict_peak, _ = _traced(lambda r=records: pd.DataFrame([dict(row) for row in r]))
            runs[n] = (peak, int(result.table.memory_usage(deep=True).sum()), dict_peak)
        extra = args.large - args.small
        (p1, t1, d1), (p2, t2, d2) = runs[args.small], runs[args.large]
        per_input, table, dicts = (p2 - p1) / extra, (t2 - t1) / extra, (d2 - d1) / extra
        print(f"load average {_load()}; {args.mem_slices} slices per input, {args.small} vs {args.large} inputs")
        print(f"predict peak growth per input   {per_input / 1e3:8.1f} KB")
        print(f"output table per input          {table / 1e3:8.1f} KB   (peak / table = {per_input / table:.2f})")
        print(f"same rows as dicts, then table  {dicts / 1e3:8.1f} KB   (that / table = {dicts / table:.2f}; "
              f"that / predict = {dicts / per_input:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "mridomain_predict_bench"))
    ap.add_argument("--reuse", action="store_true", help="reuse the workdir's archive and run")
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--run", default=None, help="a trained run folder (with --inputs)")
    ap.add_argument("--inputs", nargs="*", default=[], help="DICOM series folders for --run")
    ap.add_argument("--memory", action="store_true", help="predict's memory per input instead (issue 14)")
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--large", type=int, default=80)
    ap.add_argument("--mem-slices", type=int, default=8)
    args = ap.parse_args()
    if args.run is not None and not args.inputs:
        ap.error("--run needs --inputs")
    memory(args) if args.memory else throughput(args)


if __name__ == "__main__":
    main()
