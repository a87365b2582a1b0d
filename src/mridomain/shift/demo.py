"""``mridomain shift demo``: the whole study on a simulated two-vendor DBC-like archive.

simulate (tumor-centred 5-slice slabs, AJCC stage in the features sheet) -> the MRI-Breast stage
task's manifest (T > 2, 47 x 47 x 5 crop on the tumor box, GE vs Siemens) -> main experiment
(Table 2, Delta) -> target-domain mixing -> training noise -> attribution of the drop to
acquisition factors by re-imaging the target test patients -> report. Every step is the library
call a user makes on their own data; only the archive is simulated.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rich.console import Console

__all__ = ["run_shift_demo", "ShiftDemoResult", "DEMO_SIZES"]

#: cpu-sized demo: what fits 10 minutes on 2 cores (measured: docs/shift.md)
DEMO_SIZES = dict(patients=200, main_seeds=5, extra_seeds=2, attribution_seeds=1)


@dataclass
class ShiftDemoResult:
    out: Path
    timings: dict[str, float] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "n/a"


def run_shift_demo(out: str | Path = "shift_demo", patients: int = DEMO_SIZES["patients"], seed: int = 0,
                   main_seeds: int = DEMO_SIZES["main_seeds"], extra_seeds: int = DEMO_SIZES["extra_seeds"],
                   attribution_seeds: int = DEMO_SIZES["attribution_seeds"], threshold: int = 2,
                   epochs: int | None = None, mixing: Sequence[float] | None = None,
                   alphas: Sequence[float] | None = None, workers: int | None = None) -> ShiftDemoResult:
    """Run the domain-shift study end to end on a freshly simulated archive (cpu preset).

    Args:
        out: folder for the archive, manifest, study and report (a finished study is resumed).
        patients: simulated patients (about 9 % of them have a T3/T4 tumour, the positives).
        seed: simulation seed (the study's seeds are 0..main_seeds-1).
        main_seeds: seeds of the main experiment (the paper: 10).
        extra_seeds: seeds of the mixing and noise experiments (the paper: 3).
        attribution_seeds: main seeds whose models are attributed (each costs a re-imaging of the
            target test patients under every factor).
        threshold: label = T stage > threshold (the paper: 2).
        epochs: override the cpu preset's epochs.
        mixing, alphas: the mixing fractions / noise levels (default: the paper's).
        workers: processes for simulation, training and re-imaging (default: all cores).
    """
    from mridomain.shift.attribution import run_attribution
    from mridomain.shift.manifest import manifest_from_simulation, write_manifest
    from mridomain.shift.protocol import MIXING_FRACTIONS, NOISE_ALPHAS
    from mridomain.shift.report import render_report
    from mridomain.shift.study import run_mixing, run_noise, run_study
    from mridomain.sim import simulate

    from mridomain.errors import check_range

    for value, name in ((patients, "patients"), (main_seeds, "main_seeds"), (extra_seeds, "extra_seeds")):
        check_range(value, name, 1)                  # before the simulation, not after it
    check_range(attribution_seeds, "attribution_seeds", 0, main_seeds)
    check_range(threshold, "threshold", 0, 3)        # label = T stage > threshold; T stages run 0..4
    console = Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = ShiftDemoResult(out)
    t_all = time.perf_counter()
    load_before = _load()
    n_steps = 6

    def step(i: int, title: str) -> float:
        console.rule(f"[bold]{i}/{n_steps} {title}")
        return time.perf_counter()

    t0 = step(1, f"Simulating {patients} DBC-like patients: a 5-slice slab through each tumour, GE and Siemens")
    archive = out / "archive"
    if not (archive / "manifest.parquet").exists():
        sim = simulate(archive, n_patients=patients, seed=seed, slices=5, preset="dbc", phases=1, workers=workers,
                       slab="tumor")
        console.print(sim.summary())
    else:
        console.print(f"reusing {archive}")
    result.timings["simulate"] = time.perf_counter() - t0

    t0 = step(2, f"Manifest: T stage > {threshold} from the features sheet, 47 x 47 x 5 crop on the tumour box")
    build = manifest_from_simulation(archive, threshold=threshold)
    manifest = write_manifest(build.table, out / "manifest.parquet")
    console.print(build.summary())
    result.timings["manifest"] = time.perf_counter() - t0

    study_dir = out / "study"
    kw = dict(workers=workers, report=False)
    t0 = step(3, f"Main experiment: M_GE and M_SIEMENS over {main_seeds} seeds, each tested on both domains")
    res = run_study(manifest, study_dir, seeds=main_seeds, preset="cpu", epochs=epochs, **kw)
    console.print(res.summary())
    result.timings["main"] = time.perf_counter() - t0

    t0 = step(4, f"Target-domain mixing (Appendix A.1) and training noise (A.2), {extra_seeds} seeds each")
    console.print(run_mixing(manifest, study_dir, fractions=mixing or MIXING_FRACTIONS, seeds=extra_seeds, **kw).summary())
    console.print(run_noise(manifest, study_dir, alphas=alphas or NOISE_ALPHAS, seeds=extra_seeds, **kw).summary())
    result.timings["mixing+noise"] = time.perf_counter() - t0

    t0 = step(5, "Attribution: re-image the target test patients with one acquisition factor switched at a time")
    att = run_attribution(study_dir, archive, sim_seed=seed, preset="dbc", seeds=list(range(attribution_seeds)),
                          workers=workers)
    for line in att.findings:
        console.print(f"- {line}")
    result.timings["attribution"] = time.perf_counter() - t0

    t0 = step(6, "Report: Table 2, Delta, Figures 2-5, attribution, report.html")
    command = "mridomain shift demo " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if "demo" in sys.argv else None
    result.timings["total"] = time.perf_counter() - t_all
    rep = render_report(study_dir, title="Scanner domain-shift study: simulated DBC-like archive",
                        command=(command or "mridomain.shift.demo.run_shift_demo")
                        + f" | {result.timings['total']:.0f} s until the report, load average {load_before} before, "
                          f"{_load()} after")
    result.timings["report"] = time.perf_counter() - t0
    result.timings["total"] = time.perf_counter() - t_all
    result.findings = rep.findings + att.findings
    from mridomain.files import dump_json

    dump_json({"timings_s": result.timings, "load_average_before": load_before, "load_average_after": _load(),
               "patients": patients, "seed": seed, "main_seeds": main_seeds, "extra_seeds": extra_seeds,
               "attribution_seeds": attribution_seeds, "threshold": threshold}, out / "demo_timings.json")
    console.rule("[bold]What the simulated study found")
    for line in rep.findings:
        console.print(f"- {line}")
    console.print(f"Tables and figures: {study_dir}; report: {rep.html}")
    console.print("Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings.items())
                  + f"; load average {load_before} before, {_load()} after")
    return result
