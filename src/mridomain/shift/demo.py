"""``mridomain shift demo``: the whole study, two tasks, on a simulated two-vendor DBC-like archive.

simulate (a T-stage case-control cohort, tumour-centred 3-slice slabs, AJCC stage in the features
sheet) -> two tasks, each its own study folder:

- **stage** (the paper's MRI-Breast task): T > 2 from the features sheet, a 47 x 47 x 3 crop on
  the tumour box; split stratified by label, so that every test set holds its share of cases;
- **presence** (the shape of the paper's slice-level MRI-Prostate / CT tasks): does a 47 x 47 patch
  of the lesion's slice show the lesion (label 1) or is it the mirror patch of the other breast
  (label 0); T1/T2 lesions only; the paper's random split;

-> main experiment of each (Table 2, Delta with CI, p and detectable Delta) -> target-domain mixing
and training noise (stage task) -> attribution of each task's out-of-domain change to acquisition
factors by re-imaging target patients -> a report per task. Every step is the library call a user
makes on their own data; only the archive is simulated.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console

__all__ = ["run_shift_demo", "ShiftDemoResult", "DEMO_SIZES"]

#: cpu-sized demo: what fits 10 minutes on 2 cores (measured: docs/shift.md). 700 patients of the
#: case-control cohort give the smaller domain (Siemens, ~43 % of the dbc preset's exams) 150 cases
#: and 150 controls, so a stratified 1/6 test set holds 25 of each (stage task) and the T1/T2
#: controls give 25 lesion and 25 contralateral patches per test set (presence task); a 3-slice slab
#: (the paper crops 5) is what the simulation budget allows. One source partner per re-imaged
#: patient: the attribution's interval resamples patients and seeds, so a second partner of the
#: same patient buys less than it costs (it doubled the re-imaging, a third of the demo's CPU).
DEMO_SIZES = dict(patients=700, slices=3, main_seeds=10, extra_seeds=1, attribution_seeds=10, partners=1,
                  attribution_patients=16)
#: the demo's mixing fractions and noise levels (the paper's whole grids are ``mridomain shift
#: mixing`` / ``noise``), 1 seed: the budget goes to the main experiment's power. f = 0.2 only:
#: f = 0.5 doubles the target samples added to the training set, the costliest runs of the demo
DEMO_MIXING = (0.2,)
DEMO_ALPHAS = (5, 50)


@dataclass
class ShiftDemoResult:
    """What :func:`run_shift_demo` did: its folder, wall seconds and CPU seconds per step (CPU of
    this process and every worker it started), and the findings of the reports and attributions."""

    out: Path
    timings: dict[str, float] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its descendants, live or finished.

    ``os.times`` counts this process and the children it has reaped; joblib's loky workers live on
    between calls, so their CPU is read from ``/proc`` (Linux; elsewhere only the reaped part)."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc").is_dir() else []:
        try:
            text = entry.read_text()
        except OSError:        # the process ended while we looked
            continue
        fields = text[text.rindex(")") + 2:].split()   # after "pid (comm) ": state, ppid, ...
        pid = int(entry.parent.name)
        parents[pid] = int(fields[1])
        # utime, stime, cutime, cstime are fields 14-17 of stat (11-14 after the comm)
        times[pid] = sum(int(x) for x in fields[11:15]) / tick
    me = os.getpid()
    for pid in times:
        p, seen = parents.get(pid), 0
        while p is not None and p != me and p > 1 and seen < 64:
            p, seen = parents.get(p), seen + 1
        if p == me and pid != me:
            total += times[pid]
    return total


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "n/a"


def _print_summary(console: Console, result: ShiftDemoResult, load_before: str, reports: dict[str, Any]) -> None:
    """The findings, the timings (wall and CPU per step) with the load average, and the reports."""
    console.rule("[bold]What the simulated study found")
    for line in result.findings:
        console.print(f"- {line}")
    console.print("Timings (wall s / CPU s): " + ", ".join(f"{k} {v:.0f} / {result.cpu_seconds.get(k, 0):.0f}"
                                                           for k, v in result.timings.items())
                  + f"; load average {load_before} before, {_load()} after")
    for name, html in reports.items():
        console.print(f"{name} report: {html}")


class _Steps:
    """The demo's numbered steps: a rule on the console, then wall and CPU seconds per step."""

    def __init__(self, console: Console, result: ShiftDemoResult, n_steps: int):
        self.console, self.result, self.n_steps = console, result, n_steps
        self.started_wall, self.started_cpu = time.perf_counter(), _cpu_seconds()
        self._wall = self._cpu = 0.0

    def start(self, i: int, title: str) -> None:
        """Announce step ``i`` and start its clocks."""
        self.console.rule(f"[bold]{i}/{self.n_steps} {title}")
        self._cpu, self._wall = _cpu_seconds(), time.perf_counter()

    def done(self, name: str) -> None:
        """Record the step's wall and CPU seconds under ``name``."""
        self.result.timings[name] = time.perf_counter() - self._wall
        self.result.cpu_seconds[name] = _cpu_seconds() - self._cpu

    def total(self) -> None:
        """Record the seconds since the first step under ``total``."""
        self.result.timings["total"] = time.perf_counter() - self.started_wall
        self.result.cpu_seconds["total"] = _cpu_seconds() - self.started_cpu


def _simulate_archive(console: Console, out: Path, patients: int, seed: int, slices: int,
                      workers: int | None) -> Path:
    """The case-control archive under ``OUT/archive`` (reused when its manifest is there)."""
    from mridomain.sim.breast import simulate

    archive = out / "archive"
    if not (archive / "manifest.parquet").exists():
        sim = simulate(archive, n_patients=patients, seed=seed, slices=slices, preset="dbc", phases=1,
                       workers=workers, slab="tumor", cohort="t-stage-case-control")
        console.print(sim.summary())
    else:
        console.print(f"reusing {archive}")
    return archive


def _write_manifests(console: Console, out: Path, archive: Path, threshold: int, slices: int) -> dict[str, Path]:
    """The stage and presence manifests of the archive, written to ``OUT/manifest_<task>.parquet``."""
    from mridomain.shift.manifest import manifest_from_simulation, presence_manifest_from_simulation, write_manifest

    tasks = {}
    stage = manifest_from_simulation(archive, threshold=threshold, crop=(slices, 47, 47),
                                     dataset="MRI-Breast T stage (simulated)")
    presence = presence_manifest_from_simulation(archive, crop=(1, 47, 47))
    for name, build in (("stage", stage), ("presence", presence)):
        tasks[name] = write_manifest(build.table, out / f"manifest_{name}.parquet")
        console.print(build.summary())
    return tasks


def _run_main(console: Console, tasks: dict[str, Path], studies: dict[str, Path], main_seeds: int,
              epochs: int | None, workers: int | None) -> None:
    """The main experiment of both tasks (cpu preset); the stage task stratified."""
    from mridomain.shift.study import run_study

    # the stage task stratifies (the paper splits at random): with 150 cases in the smaller domain a
    # random 1/6 test set falls below 25 cases in about half the seeds, a stratified one never does
    for name, stratify in (("stage", True), ("presence", None)):
        res = run_study(tasks[name], studies[name], seeds=main_seeds, preset="cpu", epochs=epochs, stratify=stratify,
                        workers=workers, report=False)
        console.print(res.summary())


def _run_extra(console: Console, manifest: Path, study: Path, extra_seeds: int, mixing: Sequence[float] | None,
               alphas: Sequence[float] | None, workers: int | None) -> None:
    """Target-domain mixing and training noise on one task (nothing when ``extra_seeds`` is 0)."""
    from mridomain.shift.study import run_mixing, run_noise

    if extra_seeds > 0:
        console.print(run_mixing(manifest, study, fractions=mixing or DEMO_MIXING, seeds=extra_seeds,
                                 workers=workers, report=False).summary())
        console.print(run_noise(manifest, study, alphas=alphas or DEMO_ALPHAS, seeds=extra_seeds,
                                workers=workers, report=False).summary())


def _run_attributions(console: Console, studies: dict[str, Path], archive: Path, seed: int, seeds: list[int],
                      partners: int, attribution_patients: int | None, workers: int | None) -> list[str]:
    """The attribution of every task's study; returns the findings."""
    from mridomain.shift.attribution import run_attribution

    found = []
    for study in studies.values():
        att = run_attribution(study, archive, sim_seed=seed, preset="dbc", seeds=seeds, partners=partners,
                              max_patients=attribution_patients, workers=workers)
        for line in att.findings:
            console.print(f"- {line}")
        found += att.findings
    return found


def run_shift_demo(out: str | Path = "shift_demo", patients: int = DEMO_SIZES["patients"], seed: int = 0,
                   main_seeds: int = DEMO_SIZES["main_seeds"], extra_seeds: int = DEMO_SIZES["extra_seeds"],
                   attribution_seeds: int = DEMO_SIZES["attribution_seeds"], threshold: int = 2,
                   epochs: int | None = None, mixing: Sequence[float] | None = None,
                   alphas: Sequence[float] | None = None, workers: int | None = None,
                   slices: int = DEMO_SIZES["slices"], partners: int = DEMO_SIZES["partners"],
                   attribution_patients: int | None = DEMO_SIZES["attribution_patients"]) -> ShiftDemoResult:
    """Run the domain-shift study end to end on a freshly simulated archive (cpu preset), two tasks.

    Args:
        out: folder for the archive, manifests, the two studies and their reports (resumed).
        patients: simulated patients of the T-stage case-control cohort (half T3/T4 cases, half
            T1/T2 controls within each manufacturer).
        seed: simulation seed (the study's seeds are 0..main_seeds-1).
        main_seeds: seeds of the main experiment (the paper: 10).
        extra_seeds: seeds of the mixing and noise experiments on the stage task (the paper: 3; 0
            leaves them out).
        attribution_seeds: main seeds whose models are attributed (pooled).
        threshold: stage label = T stage > threshold (the paper: 2).
        epochs: override the cpu preset's epochs.
        mixing, alphas: the mixing fractions / noise levels (default: f = 0.2; alpha = 5 and 50).
        workers: processes for simulation, training and re-imaging (default: all cores).
        slices: slices of the tumour slab (the stage crop's depth).
        partners: source partners per re-imaged target patient.
        attribution_patients: target patients re-imaged per direction (None: every test patient).
    """
    from mridomain.errors import check_range
    from mridomain.files import dump_json
    from mridomain.shift.report import render_report

    for value, name in ((patients, "patients"), (main_seeds, "main_seeds")):
        check_range(value, name, 1)                  # before the simulation, not after it
    check_range(extra_seeds, "extra_seeds", 0)       # 0 leaves mixing and noise out
    check_range(attribution_seeds, "attribution_seeds", 0, main_seeds)
    check_range(threshold, "threshold", 0, 3)        # label = T stage > threshold; T stages run 0..4
    console = Console(soft_wrap=True)   # tables are not wrapped mid-row on a pipe
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = ShiftDemoResult(out)
    load_before = _load()
    steps = _Steps(console, result, 6)

    steps.start(1, f"Simulating {patients} DBC-like patients (T-stage case-control cohort): a {slices}-slice slab "
                   "through each tumour, GE and Siemens")
    archive = _simulate_archive(console, out, patients, seed, slices, workers)
    steps.done("simulate")

    steps.start(2, "Manifests: T stage > 2 on a 47 x 47 crop of the slab; lesion presence on 47 x 47 patches")
    tasks = _write_manifests(console, out, archive, threshold, slices)
    steps.done("manifest")

    studies = {name: out / f"study_{name}" for name in tasks}
    steps.start(3, f"Main experiment of both tasks: M_GE and M_SIEMENS over {main_seeds} seeds, each tested on both")
    _run_main(console, tasks, studies, main_seeds, epochs, workers)
    steps.done("main")

    steps.start(4, f"Target-domain mixing (Appendix A.1) and training noise (A.2) on the stage task, {extra_seeds} "
                   "seed(s)")
    _run_extra(console, tasks["stage"], studies["stage"], extra_seeds, mixing, alphas, workers)
    steps.done("mixing+noise")

    steps.start(5, f"Attribution: re-image target patients with factors of {partners} partners' protocols, pooled over "
                   f"{attribution_seeds} seeds")
    att_findings = _run_attributions(console, studies, archive, seed, list(range(min(attribution_seeds, main_seeds))),
                                     partners, attribution_patients, workers)
    steps.done("attribution")

    steps.start(6, "Reports: Table 2, Delta, test sets, figures, attribution, report.html per task")
    command = "mridomain shift demo " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if "demo" in sys.argv else None
    steps.total()
    reports = {name: render_report(
        studies[name], title=f"Scanner domain-shift study, simulated DBC-like archive: {title}",
        command=(command or "mridomain.shift.demo.run_shift_demo")
        + f" | {result.timings['total']:.0f} s until the reports, load average {load_before} before, {_load()} after"
        + "; cohort: t-stage-case-control (as many T3/T4 cases as T1/T2 controls per manufacturer)")
        for name, title in (("stage", "T stage > 2"), ("presence", "lesion presence"))}
    steps.done("report")
    steps.total()
    result.findings = [f for r in reports.values() for f in r.findings] + att_findings
    dump_json({"timings_s": result.timings, "cpu_s": result.cpu_seconds, "load_average_before": load_before,
               "load_average_after": _load(), "patients": patients, "seed": seed, "slices": slices,
               "main_seeds": main_seeds, "extra_seeds": extra_seeds, "attribution_seeds": attribution_seeds,
               "partners": partners, "attribution_patients": attribution_patients, "threshold": threshold,
               "cohort": "t-stage-case-control"}, out / "demo_timings.json")
    _print_summary(console, result, load_before, {name: rep.html for name, rep in reports.items()})
    return result
