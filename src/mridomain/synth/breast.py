"""``mridomain synth breast-demo``: the paper's breast protocol on the simulator, end to end.

Simulates multi-sequence breast exams (:mod:`mridomain.sim.breast.exams`: T1, FatSatT1, T2, DCE and
FatSatDCE of 6 time points, wash-in, wash-out, DWI of 4 b-values), trains the cpu preset on them
(DCE, FatSatDCE and DWI through the ConvLSTM path), evaluates the held-out exams and writes

* ``contribution.csv``: the breast C_t / C_d (eq. 4) with ranks, beside the paper's Table 2 breast
  rows and the oracle order (``breast_table2.csv``, ``breast_table2.md``);
* ``oracle.csv``: what each sequence's voxels cannot be predicted from the other sequences' voxels
  (:mod:`mridomain.synth.oracle`, 4-D sequences time point by time point), on the images as written and
  on the same patients rendered without noise;
* ``fig6_md.png``: M_d of every sequence over the image, on the test exam with the largest lesion (Fig. 6);
* ``demo.json`` (timings, load average, CPU seconds) and ``report.html``.
"""
from __future__ import annotations

import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["PAPER_TABLE2_BREAST", "BreastDemoResult", "run_breast_demo", "noise_free_exams", "DEMO_PATIENTS",
           "run_breast_fig7"]

#: the paper's Table 2, in-house breast rows: (C_t, rank_t, C_d, rank_d)
PAPER_TABLE2_BREAST = pd.DataFrame(
    [("t1", -2.722, 8, 0.968, 4), ("fatsatt1", -0.261, 3, 0.443, 6), ("t2", -0.430, 4, 1.737, 2),
     ("dce", 2.013, 1, 2.741, 1), ("fatsatdce", 1.199, 2, 0.656, 5), ("washin", -1.266, 5, -0.370, 7),
     ("washout", -1.334, 6, -0.596, 8), ("dwi", -1.670, 7, 1.516, 3)],
    columns=["sequence", "paper_c_t", "paper_rank_t", "paper_c_d", "paper_rank_d"])

#: exams simulated by the demo (split 70 / 10 / 20 % by the cpu preset: 21 / 3 / 6)
DEMO_PATIENTS = 30
#: the cpu preset's schedule shortened for the demo's 10-minute budget on 2 idle cores (the cpu preset's
#: 12 x 150 steps on 8 sequences with the ConvLSTM cost several times that; docs/synth.md gives the timings)
DEMO_EPOCHS = 8
DEMO_STEPS = 50
#: the oracle's training exams (evenly spaced over the training split) and voxels per exam
ORACLE_TRAIN = 10
ORACLE_VOXELS = 3000


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def noise_free_exams(data_root: str | Path, subject_ids, sequences):
    """The exams ``subject_ids`` of a simulated layout rendered again without noise (seed and index
    from its ``exams.csv``, grid from its ``dataset.json``), normalized as the loader normalizes them."""
    import json

    from mridomain.errors import EmptyInputError
    from mridomain.sim.breast.exams import exam_phantom
    from mridomain.sim.breast.multiseq import render_exam
    from mridomain.synth.data import Subject, normalize_volume

    root = Path(data_root)
    if not (root / "exams.csv").exists():
        raise EmptyInputError(root / "exams.csv", "no breast simulator table: noise-free exams cannot be rendered")
    info = json.loads((root / "dataset.json").read_text())
    table = pd.read_csv(root / "exams.csv").set_index("subject_id")
    out = []
    for sid in subject_ids:
        row = table.loc[sid]
        ex = render_exam(exam_phantom(int(row["seed"]), int(row["index"])), size=tuple(info["size"]),
                         pixel_mm=float(info["pixel_mm"]), slices=int(info["slices"]), noise=False)
        vols = {s: normalize_volume(ex.images[s])[0] for s in sequences}
        out.append(Subject(sid, vols, ex.affine, seg=(ex.seg == 1).astype(np.uint8)))
    return out


@dataclass
class BreastDemoResult:
    """What :func:`run_breast_demo` wrote: the folder, its Table 2 and the run facts (times, load
    averages, the learned and oracle contribution orders)."""

    out: Path
    table: pd.DataFrame
    info: dict

    def summary(self) -> str:
        """Lines for the terminal (and breast_table2.md): time, CPU time and load average, Table 2, and the
        learned, oracle and paper contribution orders."""
        from mridomain.report import df_to_markdown

        i = self.info
        return "\n".join([
            f"breast demo finished in {i['seconds']:.0f} s wall, {i['cpu_seconds']:.0f} s CPU "
            f"(idle 2-core estimate {i['cpu_seconds'] / 2:.0f} s); load average {i['load_average_start']} at the "
            f"start, {i['load_average_end']} at the end -> {self.out}",
            df_to_markdown(self.table.round(3)),
            f"learned C_t order: {i['order_c_t']}", f"learned C_d order: {i['order_c_d']}",
            *(f"{k} oracle order (most unexplained first): {v}" for k, v in i["oracle_orders"].items()),
            *(f"{k} oracle order (lowest PSNR first): {v}" for k, v in i["oracle_orders_by_psnr"].items()),
            f"paper C_d order: {i['paper_order_c_d']}"])


def run_breast_demo(out: str | Path = "breast_demo", patients: int = DEMO_PATIENTS, seed: int = 0,
                    epochs: int | None = None, steps_per_epoch: int | None = None, device: str | None = None,
                    workers: int | None = None, progress: bool = True) -> BreastDemoResult:
    """Python twin of ``mridomain synth breast-demo`` (``epochs`` / ``steps_per_epoch`` default to
    :data:`DEMO_EPOCHS` x :data:`DEMO_STEPS` of the cpu preset)."""
    from scipy.stats import spearmanr

    from mridomain.engine import write_json_atomic
    from mridomain.report import Section
    from mridomain.sim.breast.exams import simulate_breast_exams
    from mridomain.synth.data import load_dataset
    from mridomain.synth.differentiation import overlay_figure, subject_dmaps
    from mridomain.synth.evaluation import evaluate, evaluation_html
    from mridomain.synth.model import load_run
    from mridomain.synth.oracle import compare_with_oracle, fit_oracle
    from mridomain.synth.training import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0, cpu0, load0 = time.perf_counter(), _cpu_seconds(), _load()
    stages: dict[str, float] = {}

    if epochs is None:
        epochs = DEMO_EPOCHS
    if steps_per_epoch is None:
        steps_per_epoch = DEMO_STEPS
    cpu_stages: dict[str, float] = {}
    t, c = time.perf_counter(), _cpu_seconds()
    sim = simulate_breast_exams(out / "exams", n_patients=patients, seed=seed, workers=workers, progress=progress)
    # the worker processes' CPU reaches getrusage(RUSAGE_CHILDREN) only once they exit and are reaped
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)
    stages["simulate"], cpu_stages["simulate"] = time.perf_counter() - t, _cpu_seconds() - c

    t, c = time.perf_counter(), _cpu_seconds()
    fit = train(out / "exams", out / "run", preset="cpu", epochs=epochs, seed=seed, device=device,
                progress=progress, steps_per_epoch=steps_per_epoch)
    stages["train"], cpu_stages["train"] = time.perf_counter() - t, _cpu_seconds() - c

    t, c = time.perf_counter(), _cpu_seconds()
    run = load_run(out / "run", device=device)
    sequences = tuple(run.sequences)
    data = load_dataset(out / "exams", sequences, progress=False)
    ev = evaluate(run, data, split="test", progress=progress, html=False, dmap_dir=out / "dmap", oracle=False)
    stages["evaluate (C_t, C_d, M_d)"] = time.perf_counter() - t
    cpu_stages["evaluate (C_t, C_d, M_d)"] = _cpu_seconds() - c

    t, c = time.perf_counter(), _cpu_seconds()
    splits = run.schema["splits"]
    train_subs = data.subset(splits["train"]).subjects
    pick = np.unique(np.linspace(0, len(train_subs) - 1, min(ORACLE_TRAIN, len(train_subs))).round().astype(int))
    train_subs = [train_subs[k] for k in pick]
    test_subs = data.subset(splits["test"]).subjects
    # one voxel each (radius 0): every time point of every other sequence is a feature of its own
    oracles = {"noisy": fit_oracle(train_subs, test_subs, sequences, seed, "noisy", ORACLE_VOXELS, progress,
                                   per_timepoint=True, radius=0)}
    clean_train = noise_free_exams(out / "exams", [s.subject_id for s in train_subs], sequences)
    clean_test = noise_free_exams(out / "exams", [s.subject_id for s in test_subs], sequences)
    oracles["noise-free"] = fit_oracle(clean_train, clean_test, sequences, seed, "noise-free", ORACLE_VOXELS,
                                       progress, per_timepoint=True, radius=0)
    stages["oracle"], cpu_stages["oracle"] = time.perf_counter() - t, _cpu_seconds() - c

    contrib = ev.contribution.copy()
    oracle_table = compare_with_oracle(contrib, oracles)
    oracle_summary = oracle_table.attrs.pop("summary")
    oracle_table.to_csv(out / "oracle.csv", index=False)
    table = contrib.merge(PAPER_TABLE2_BREAST, on="sequence", how="left")
    for kind, res in oracles.items():
        o = res.table.set_index("sequence")
        table[f"oracle_unexplained_{kind}"] = table["sequence"].map(o["unexplained"])
        table[f"oracle_rank_{kind}"] = table["sequence"].map(o["rank"])
        # the unexplained fraction divides by the target's own variance: a mostly-zero map (wash-out)
        # scores high on small absolute errors; PSNR is on the same [0, 1] scale as the learned C_d
        table[f"oracle_psnr_{kind}"] = table["sequence"].map(o["psnr"])
    table.to_csv(out / "breast_table2.csv", index=False)
    contrib.to_csv(out / "contribution.csv", index=False)

    # Fig. 6: M_d of every sequence on the test exam with the largest lesion
    t = time.perf_counter()
    biggest = max(test_subs, key=lambda s: int((s.seg == 1).sum()) if s.seg is not None else 0)
    zs = biggest.head_slices()
    sub = biggest.take_slices(zs)
    maps = subject_dmaps(sub, run.translate_all(biggest, slices=zs))
    overlay_figure(sub, maps).savefig(out / "fig6_md.png", dpi=90)
    stages["Fig. 6"] = time.perf_counter() - t

    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    rho_paper = float(spearmanr(table["c_d"], table["paper_c_d"]).statistic)
    info = {
        "command": f"mridomain synth breast-demo -o {out} --patients {patients} --seed {seed}"
                   + (f" --epochs {epochs}" if epochs else ""),
        "patients": patients, "splits": {k: len(v) for k, v in splits.items()},
        "epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch,
        "order_c_t": contrib.sort_values("c_t", ascending=False)["sequence"].tolist(),
        "order_c_d": contrib.sort_values("c_d", ascending=False)["sequence"].tolist(),
        "paper_order_c_d": PAPER_TABLE2_BREAST.sort_values("paper_c_d", ascending=False)["sequence"].tolist(),
        "paper_order_c_t": PAPER_TABLE2_BREAST.sort_values("paper_c_t", ascending=False)["sequence"].tolist(),
        "oracle_orders": {k: v["oracle_order"] for k, v in oracle_summary.items()},
        "oracle_orders_by_psnr": {k: r.table.sort_values("psnr")["sequence"].tolist() for k, r in oracles.items()},
        "oracle_spearman_with_c_d": {k: round(v["spearman"], 3) for k, v in oracle_summary.items()},
        "spearman_c_d_with_paper": round(rho_paper, 3),
        "contribution_note": ev.contribution_note, "overall": ev.overall,
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "idle_estimate_seconds": round(cpu / 2, 1),
        "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
        "stage_cpu_seconds": {k: round(v, 1) for k, v in cpu_stages.items()},
        "cpu_note": "CPU of this process and its reaped children (getrusage); the simulation's worker "
                    "processes are shut down after it so that their CPU is counted",
        "load_average_start": load0, "load_average_end": _load(), "cpus": os.cpu_count(),
        "torch_threads": __import__("torch").get_num_threads(),
    }
    write_json_atomic(out / "demo.json", info)
    (out / "breast_table2.md").write_text(BreastDemoResult(out, table, info).summary() + "\n")
    if (out / "run" / "learning_curve.png").exists():
        shutil.copy(out / "run" / "learning_curve.png", out / "learning_curve.png")
    timing = pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in stages.items()]
                          + [{"stage": "total (wall)", "seconds": round(seconds, 1)},
                             {"stage": "CPU (all processes)", "seconds": round(cpu, 1)}])
    intro = Section("Breast demo", text=(
        f"{sim.summary()}\n\nTrained the cpu preset ({fit.epochs_run} epochs) on {len(splits['train'])} exams with "
        f"1-3 of their 8 sequences silenced, DCE, FatSatDCE and DWI through the ConvLSTM; evaluated on "
        f"{len(splits['test'])} complete test exams. Load average {load0} at the start, {info['load_average_end']} "
        f"at the end on {os.cpu_count()} CPUs (shared machine: wall times are noisy; CPU seconds / 2 estimate "
        "an idle 2-core machine)."),
        tables=[("C_t / C_d beside the paper's Table 2 and the oracle", table.round(3)),
                ("time per stage (s)", timing)],
        figures=[("Fig. 6: M_d per sequence", out / "fig6_md.png"),
                 ("learning curve", out / "run" / "learning_curve.png")],
        note=(f"learned C_d order {info['order_c_d']}; noise-free oracle {info['oracle_orders'].get('noise-free')}; "
              f"paper {info['paper_order_c_d']} (Spearman of C_d with the paper {rho_paper:.2f})"))
    ev.oracle, ev.oracle_summary = oracle_table, oracle_summary
    evaluation_html(ev, out / "report.html", title="Seq2Seq on the simulated breast protocol",
                    extra_sections=[intro], subtitle=info["command"])
    return BreastDemoResult(out, table, info)


#: Fig. 7 cohort: patients simulated for the response experiment (seed of its own, so the Seq2Seq run
#: that computes M_d never saw them) and the nested cross-validation's folds
FIG7_PATIENTS = 120
FIG7_SEED = 1
FIG7_OUTER, FIG7_INNER = 5, 2


def run_breast_fig7(run: str | Path, out: str | Path = "breast_fig7", patients: int = FIG7_PATIENTS,
                    seed: int = FIG7_SEED, outer_folds: int = FIG7_OUTER, inner_folds: int = FIG7_INNER,
                    epochs: int | None = None, device: str | None = None, workers: int | None = None,
                    progress: bool = True):
    """Python twin of ``mridomain synth breast-fig7``: Fig. 7 on the simulator.

    Simulates ``patients`` exams whose ``labels.csv`` holds the simulated pCR (the response trait of
    :func:`mridomain.sim.breast.multiseq.draw_response`), computes M_d with the Seq2Seq ``run`` and runs
    :func:`mridomain.synth.downstream.run_downstream` (cpu preset) on two inputs: wash-in with and
    without its own M_d (the paper's "wash-in + M_d"), and wash-in with and without the M_d of all eight
    sequences (where a trait that lives in diffusion could reach the classifier). Writes what
    ``synth downstream`` writes (table4.csv, md_difference.csv, fig7_roc.png, report.html) under ``out``.
    """
    from mridomain.sim.breast.exams import simulate_breast_exams
    from mridomain.sim.breast.multiseq import BREAST_SEQUENCES
    from mridomain.synth.downstream import run_downstream

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    exams = out / "exams"
    if not (exams / "labels.csv").exists():
        simulate_breast_exams(exams, n_patients=patients, seed=seed, workers=workers, progress=progress)
    # the first ``patients`` exams of the cohort (exam i depends only on (seed, i), so a larger cohort
    # simulated before holds the same first exams)
    labels = pd.read_csv(exams / "labels.csv").head(patients)
    labels.to_csv(out / "labels.csv", index=False)
    combos = {"Wash-in": ("washin",), "Wash-in, M_d of all": ("washin",)}
    md_of = {"Wash-in": ("washin",), "Wash-in, M_d of all": BREAST_SEQUENCES}
    return run_downstream(exams, out / "labels.csv", run, out, preset="cpu", seed=seed, epochs=epochs,
                          outer_folds=outer_folds, inner_folds=inner_folds, id_column="subject_id",
                          label_column="pcr", device=device, progress=progress, combinations=combos, md_of=md_of)
