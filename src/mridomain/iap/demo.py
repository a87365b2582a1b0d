"""The end-to-end demo on the embedded default dataset (the simulator).

simulate -> index -> prepare -> train (cpu preset) -> evaluate -> predict figure.
Every step is the same library call a user makes on a real archive; only the archive differs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and how long each step took (seconds)."""

    out: Path
    timings: dict[str, float] = field(default_factory=dict)
    table1_markdown: str = ""


#: what a finished demo (steps 1-5) records in its folder, for ``--full --reuse``
DEMO_RECORD = "demo.json"
#: how the demo builds its slice caches from an index (every slice, 224 px, max-255, the k-space view);
#: benches that rebuild the demo's data use the same
DEMO_CACHE = {"slices_per_series": None, "size": 224, "normalization": "max255", "kspace_view": True}


__all__ = ["run_demo", "run_domain_tools"]


def run_demo(out: str | Path = "demo_out", patients: int = 600, seed: int = 0, slices: int = 3,
             epochs: int | None = None, workers: int | None = None, full: bool = False,
             reuse: bool = False) -> DemoResult:
    """Run the whole IAP pipeline on a freshly simulated DBC-like archive and print Table 1.

    Args:
        out: folder for the archive, index, cache, run and reports (re-created steps overwrite).
        patients: number of simulated patients (one pre-contrast series each). Many patients with
            few slices each: what a network learns from one patient's slices is mostly that
            patient's anatomy, so patient count, not slice count, limits generalization.
        seed: seed of the simulation, the split and the training.
        slices: slices per simulated series (spread over the breasts).
        epochs: override the cpu preset's epoch count.
        workers: processes for simulation, indexing and preparation (default: all cores).
        full: also run the dataset analysis, the paper's Table 2 routing experiment and the
            applicability check (see :func:`run_domain_tools`).
        reuse: with ``full``, keep steps 1-5 of a demo that finished in ``out`` and add only
            steps 6-8 (``patients``, ``seed``, ``slices`` and ``epochs`` are then those the earlier
            demo recorded in ``out/demo.json``).
    """
    from mridomain.data import build_index, prepare_cache, print_index_summary
    from mridomain.iap import evaluate, predict_paths, train
    from mridomain.sim.breast import simulate

    from mridomain.errors import InvalidArgumentError
    from mridomain.files import dump_json, read_json

    console = Console(soft_wrap=True)   # tables are not wrapped mid-row on a pipe
    out = Path(out)
    result = DemoResult(out=out)
    if reuse:
        if not full:
            raise InvalidArgumentError("--reuse adds steps 6-8 to a finished demo: use it with --full")
        if not (out / DEMO_RECORD).exists():
            raise InvalidArgumentError(f"{out}: no finished demo to reuse (no {DEMO_RECORD}); "
                                       "run `mridomain demo` into it first")
        record = read_json(out / DEMO_RECORD)
        console.print(f"Reusing the finished demo in {out} ({', '.join(f'{k} {v}' for k, v in record.items())}): "
                      "steps 1-5 are kept.")
        result.table1_markdown = (out / "eval_test" / "report.md").read_text() \
            if (out / "eval_test" / "report.md").exists() else ""
        result.timings.update(run_domain_tools(out, seed=int(record["seed"]), workers=workers, console=console))
        _finish(console, out, result, full=True)
        return result
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_RECORD).unlink(missing_ok=True)   # written again once steps 1-5 have finished

    def step(name: str, title: str):
        console.rule(f"[bold]{title}")
        return name, time.perf_counter()

    n_steps = 8 if full else 5
    name, t0 = step("simulate", f"1/{n_steps} Simulating {patients} DBC-like patients (multi-vendor DICOM)")
    sim = simulate(out / "archive", n_patients=patients, seed=seed, slices=slices, preset="dbc",
                   phases=1, workers=workers)
    console.print(sim.summary())
    result.timings[name] = time.perf_counter() - t0

    name, t0 = step("index", f"2/{n_steps} Indexing the archive's headers")
    index_path = out / "index.parquet"
    index = build_index(out / "archive" / "dicom", out=index_path, workers=workers)
    print_index_summary(index, index_path)
    result.timings[name] = time.perf_counter() - t0

    name, t0 = step("prepare", f"3/{n_steps} Preparing the patient-split slice cache")
    cache = prepare_cache(index_path, out / "cache", seed=seed, annotations=out / "archive" / "Annotation_Boxes.csv",
                          workers=workers, **DEMO_CACHE)
    console.print(cache.summary())
    result.timings[name] = time.perf_counter() - t0

    name, t0 = step("train", f"4/{n_steps} Training the multi-task IAP network (cpu preset)")
    run_dir = out / "run"
    train(out / "cache", run_dir, preset="cpu", epochs=epochs, seed=seed)
    result.timings[name] = time.perf_counter() - t0

    name, t0 = step("evaluate", f"5/{n_steps} Evaluating on held-out patients (Table 1)")
    report = evaluate(run_dir, cache=out / "cache", split="test", out=out / "eval_test")
    result.table1_markdown = report.to_markdown()
    console.print(result.table1_markdown)
    test_series = cache.table.loc[cache.table["split"] == "test", "series_uid"].unique()[:8]
    index_table = index.table.set_index("series_uid")
    folders = [Path(index_table.loc[uid, "files"][0]).parent for uid in test_series]
    predictions = predict_paths(run_dir, folders, out=out / "predictions.csv",
                                figure=out / "predictions.png")
    console.print(predictions.summary())
    result.timings[name] = time.perf_counter() - t0
    dump_json({"patients": patients, "seed": seed, "slices": slices, "epochs": epochs}, out / DEMO_RECORD)

    if full:
        result.timings.update(run_domain_tools(out, seed=seed, workers=workers, console=console))
    _finish(console, out, result, full)
    return result


def _finish(console: Console, out: Path, result: DemoResult, full: bool) -> None:
    """Timings, then where everything is; the main report's path is the last line."""
    console.rule("[bold]Done")
    for key, seconds in result.timings.items():
        console.print(f"{key:>10}: {seconds:6.1f} s")
    console.print(f"Outputs in {out}/: index.parquet, cache/, run/ (checkpoint, metrics.csv, "
                  f"learning_curve.png), eval_test/ (report.md, confusion matrices), predictions.png")
    if full:
        for folder in ("analysis", "routing", "compare"):
            console.print(f"report: {out / folder / 'report.html'}")
    console.print(f"report: {out / 'eval_test' / 'report.html'}")


def run_domain_tools(out: str | Path, seed: int = 0, workers: int | None = None, patients: int = 120,
                     slices: int = 16, console: Console | None = None) -> dict[str, float]:
    """Analysis, routing (paper Table 2) and applicability check on top of a finished demo
    (``mridomain demo --full``, or ``--full --reuse`` to add them to a demo that already ran).

    The routing experiment needs tumor-negative slices, which DBC defines as at least 5 slices
    away from the tumor box; the IAP demo's few slices per series are spread too thinly for that,
    so a second archive with more slices per series is simulated (new patients, another seed) and
    serves both as the tumor classifiers' data and as the "new data" of the applicability check.
    """
    from mridomain.iap import analyze, compare, run_routing_experiment
    from mridomain.data import build_index, prepare_cache
    from mridomain.sim.breast import simulate

    console = console or Console(soft_wrap=True)
    out = Path(out)
    timings: dict[str, float] = {}

    console.rule("[bold]6/8 Dataset IAP analysis (paper Appendix A.1)")
    t0 = time.perf_counter()
    analysis = analyze(out / "cache", out / "analysis")
    console.print(analysis.to_markdown())
    timings["analyze"] = time.perf_counter() - t0

    console.rule("[bold]7/8 Routing to per-manufacturer tumor classifiers (paper Table 2)")
    t0 = time.perf_counter()
    second = out / "archive_routing"
    simulate(second, n_patients=patients, seed=seed + 1000, slices=slices, preset="dbc", phases=1,
             workers=workers)
    build_index(second / "dicom", out=out / "index_routing.parquet", workers=workers)
    prepare_cache(out / "index_routing.parquet", out / "cache_routing", seed=seed,
                  annotations=second / "Annotation_Boxes.csv", workers=workers, **DEMO_CACHE)
    routing = run_routing_experiment(out / "cache_routing", out / "run", out / "routing", seed=seed)
    console.print(routing.to_markdown())
    timings["routing"] = time.perf_counter() - t0

    console.rule("[bold]8/8 Applicability check: does the IAP model cover the new archive?")
    t0 = time.perf_counter()
    checked = compare(out / "cache", out / "cache_routing", out / "run", out / "compare", seed=seed)
    console.print(checked.to_markdown())
    timings["compare"] = time.perf_counter() - t0
    return timings
