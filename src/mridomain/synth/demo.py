"""``mridomain synth demo``: simulate brains, train at cpu size, evaluate, rank and map, in one go.

Writes ``OUT/pairs.csv`` (source, target, psnr, ssim, psnr_gain_matched and their std), ``OUT/contribution.csv``
(sequence, c_t, c_d, rank_t, rank_d), ``OUT/dmap_check.json`` (the M_d ROC AUCs against the
simulator's ground truth and whether C_d puts T1Gd and FLAIR first), ``OUT/report.html`` and the
figures, plus the simulated data (``OUT/brains``) and the run (``OUT/run``).
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from mridomain.engine import write_json_atomic

__all__ = ["DemoResult", "run_demo", "DEMO_SUBJECTS"]

#: subjects simulated by the demo, split 27 / 4 / 5 (train / validation / test)
DEMO_SUBJECTS = 36
DEMO_FRACTIONS = (0.75, 0.1, 0.15)
#: ``--full``: more subjects (45 / 6 / 9) and six times the demo's epochs (96: 46,080 steps of one crop,
#: 3,840 per ordered pair). With four crops per step (11,520 steps) it gave 28.21 dB in float32 (31 min
#: 23 s wall on 2 idle cores) and 28.33 dB in bf16 on an AMX CPU (24 min 2 s); docs/synth.md, "One crop
#: per step", has the figures of the one-crop schedule the docs now quote
FULL_SUBJECTS = 60
FULL_EPOCHS = 96
#: the demo trains the ``cpu-fullres`` preset: 7,680 steps of one 64 x 64 crop with a generator that
#: is not the paper's shape (full resolution, source-conditioned encoder, no instance normalization;
#: synth.config and docs/synth.md, "A generator that learns every translation in 1,200 CPU steps"). On
#: the convergence bench it reached 26.4 dB validation PSNR in 1,200 steps against the paper-shaped cpu
#: generator's 21.6, at 0.8x its CPU.
DEMO_PRESET = "cpu-fullres"


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote: per-pair scores, Table 2, the checks against the paper and the
    simulator (with load averages), and the seconds it took."""

    out: Path
    pairs: pd.DataFrame
    contribution: pd.DataFrame
    check: dict
    seconds: float

    def summary(self) -> str:
        """Lines for the terminal: time and load average, per-pair PSNR / SSIM, Table 2, whether C_d's top
        two match the paper, the oracle comparison and the M_d AUCs."""
        from mridomain.report import df_to_markdown

        c = self.check
        lines = [f"demo finished in {self.seconds:.0f} s (load average {c['load_average_start']} at the start, "
                 f"{c['load_average_end']} at the end) -> {self.out}",
                 df_to_markdown(self.pairs[["source", "target", "psnr", "ssim"]
                                           + [col for col in ("psnr_gain_matched",) if col in self.pairs]].round(3)),
                 df_to_markdown(self.contribution.round(3)),
                 f"C_d top two: {c['c_d_top2']} (paper on BraTS: t1ce, flair) -> "
                 f"{'as the paper' if c['c_d_top2_matches_paper'] else 'NOT as the paper'}"]
        for kind, o in c.get("oracle", {}).items():
            lines.append(f"{kind} oracle (simulator's known answer) C_d order {o['oracle_order']}: learned top "
                         f"{o['learned_top']} {'matches' if o['top_matches'] else 'does NOT match'}; "
                         f"Spearman rho {o['spearman']:.2f}")
        for row in c["auc"]:
            oracle = "".join(f", {k[len('auc_oracle_'):]} oracle map: {v:.3f}" for k, v in row.items()
                             if k.startswith("auc_oracle_") and v == v)
            matched = row.get("auc_gain_matched", float("nan"))
            matched = f", gain-matched map: {matched:.3f}" if matched == matched else ""
            lines.append(f"  M_d AUC {row['map']:>15} vs {row['region']:<10}: {row['auc']:.3f} "
                         f"(target intensity alone: {row['auc_target_intensity']:.3f}{matched}{oracle})")
        return "\n".join(lines)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def demo_oracles(root: str | Path, fractions: tuple[float, ...], seed: int, normalization: str = "percentile"
                 ) -> tuple[tuple[str, ...], dict[str, list[str]], dict, dict]:
    """``(sequences, subject split, normalization, oracles)``: the simulator's known answer for the
    split that training draws from ``(fractions, seed)``, on volumes normalized as training will
    normalize them (``normalization``: the kind; a median normalization's levels fitted on the training
    subjects, as :func:`~mridomain.synth.training.train` fits them), exactly what
    :func:`~mridomain.synth.evaluation.evaluate` would fit, on one thread. The demo runs it in a worker
    process while the generator trains, which keeps about one of two cores busy, and checks the split
    and the normalization against the run's before using it."""
    from threadpoolctl import threadpool_limits

    from mridomain.synth.config import make_config
    from mridomain.synth.data import fit_normalization, layout_description, load_dataset, split_subjects
    from mridomain.synth.oracle import oracle_for_run

    described = layout_description(root)
    sequences = tuple(described[0]) if described else tuple(make_config("cpu").sequences)
    data = load_dataset(root, sequences, allow_missing=True, progress=False)
    splits = split_subjects([s.subject_id for s in data.subjects], fractions, seed)
    norm = fit_normalization(normalization, data.subset(splits["train"]).subjects, sequences)
    if norm != data.normalization:
        data = load_dataset(root, sequences, allow_missing=True, progress=False, normalization=norm)
    with threadpool_limits(1):
        oracles = oracle_for_run(data.subset(splits["train"]).subjects, data.subset(splits["test"]).subjects,
                                 sequences, data_root=data.root, progress=False, normalization=norm)
    return sequences, splits, norm, oracles


def _exit_with_parent() -> None:
    """Pool initializer: on Linux, have the kernel send this worker SIGTERM when the process that
    started it dies. A demo killed by a signal (a batch scheduler's time limit, ``kill``) runs no
    Python cleanup, and its worker would otherwise go on fitting the oracle for minutes."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


class _Background:
    """``fn(*args)`` in a one-process pool (spawned: the parent's torch and OpenMP threads do not
    survive a fork). :meth:`result` waits for it and raises its error; :meth:`cancel` stops it, so
    that a failed or interrupted training does not wait minutes for a result nobody will read; and
    the worker dies with the process that started it (:func:`_exit_with_parent`)."""

    def __init__(self, fn, *args):
        import multiprocessing

        self._pool = multiprocessing.get_context("spawn").Pool(1, initializer=_exit_with_parent)
        self._async = self._pool.apply_async(fn, args)
        self._pool.close()

    def result(self):
        try:
            return self._async.get()
        finally:
            self._pool.join()

    def cancel(self) -> None:
        self._pool.terminate()
        self._pool.join()


def _generator_shape(config) -> str:
    """How the trained generator and its batches depart from the paper's, read from the saved config."""
    network = config.network
    changes = [text for on, text in ((network.full_resolution, "every layer at full resolution"),
                                     (network.source_code, "the encoder told the source sequence"),
                                     (network.norm == "none", "no instance normalization"),
                                     (network.intensity_bins > 0,
                                      f"{network.intensity_bins} intensity bumps per input channel"),
                                     (config.paired_items, "batches drawn from subjects with both the source "
                                                           "and the target")) if on]
    return ("not the paper's shape: " + ", ".join(changes) + ", docs/synth.md") if changes else "the paper's shape"


def _start_oracles(root: Path, seed: int) -> _Background:
    """:func:`demo_oracles` in a worker process, started now."""
    from mridomain.synth.config import make_config

    return _Background(demo_oracles, str(root), DEMO_FRACTIONS, seed, make_config(DEMO_PRESET).normalization)


def run_demo(out: str | Path = "synth_demo", subjects: int | None = None, seed: int = 0, epochs: int | None = None,
             steps_per_epoch: int | None = None, voxel_mm: float = 2.0, device: str | None = None,
             progress: bool = True, full: bool = False) -> DemoResult:
    """Python twin of ``mridomain synth demo``: the whole study on simulated brains at cpu size
    (``full``: the longer run, :data:`FULL_SUBJECTS` subjects and :data:`FULL_EPOCHS` epochs)."""
    from mridomain.report import Section
    from mridomain.sim.brain import simulate_brains
    from mridomain.synth.evaluation import evaluate, evaluation_html
    from mridomain.synth.model import load_run
    from mridomain.synth.training import train

    out = Path(out)
    if subjects is None:
        subjects = FULL_SUBJECTS if full else DEMO_SUBJECTS
    if epochs is None and full:
        epochs = FULL_EPOCHS
    out.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.perf_counter(), _load()
    stages = {}
    t = time.perf_counter()
    sim = simulate_brains(out / "brains", n_subjects=subjects, seed=seed, voxel_mm=voxel_mm, progress=progress)
    stages["simulate"] = time.perf_counter() - t
    t = time.perf_counter()
    background = _start_oracles(out / "brains", seed)
    threads = torch.get_num_threads()
    # one training thread, in the demo and in --full: a step of one 64 x 64 crop is too small to share
    # out, so a second thread only waits at every parallel region's barrier (bench/synth_bench.py
    # --compare batch: 0.026 s per bf16 step on one thread, 0.046 s on two; 0.040 and 0.044 s in
    # float32), all the more beside the oracle worker, which fits on another core meanwhile
    # (docs/synth.md, "One crop per step"). Never switched mid-run: the thread count changes the
    # sums' rounding, and a rerun must repeat the figures.
    training_threads = 1
    torch.set_num_threads(training_threads)
    try:
        fit = train(out / "brains", out / "run", preset=DEMO_PRESET, epochs=epochs, seed=seed, device=device,
                    progress=progress, fractions=DEMO_FRACTIONS,
                    **({"steps_per_epoch": steps_per_epoch} if steps_per_epoch else {}))
    except BaseException:
        background.cancel()
        raise
    finally:
        torch.set_num_threads(threads)
    stages["train"] = time.perf_counter() - t
    t = time.perf_counter()
    run = load_run(out / "run", device=device)
    sequences, splits, normalization, oracles = background.result()   # a failure in the worker is raised here
    if tuple(sequences) != tuple(run.sequences) or any(splits[k] != run.schema["splits"][k] for k in ("train", "test")):
        print("the background oracle's subject split differs from the run's: evaluate fits the oracle again")
        oracles = None
    elif normalization != run.normalization:
        print("the background oracle's normalization differs from the run's: evaluate fits the oracle again")
        oracles = None
    ev = evaluate(run, out / "brains", split="test", progress=progress, html=False, dmap_dir=out / "dmap",
                  oracles=oracles)
    stages["evaluate (with M_d)"] = time.perf_counter() - t
    test_ids = run.schema["splits"]["test"]
    dmap_files = ev.dmap_files

    pairs = ev.pairs.copy()
    pairs.to_csv(out / "pairs.csv", index=False)
    ev.contribution.to_csv(out / "contribution.csv", index=False)
    top2 = ev.contribution.sort_values("c_d", ascending=False)["sequence"].head(2).tolist()
    seconds = time.perf_counter() - t0
    check = {
        "auc": [] if ev.dmap_check is None else ev.dmap_check.drop(columns=["what"]).to_dict("records"),
        "auc_definition": "ROC AUC of the map's voxel values for the region against the rest of the brain, "
                          "voxels pooled over the test subjects; auc_target_intensity is the AUC of the target "
                          "image's own intensity (what a map that only echoes brightness would reach); "
                          "auc_gain_matched is the AUC of the map with each generated volume first scaled by its "
                          "least-squares gain to the target (not in the paper: the volume's intensity scale, "
                          "which no other sequence shows, left out)",
        "c_d_top2": top2, "c_d_top2_matches_paper": set(top2) == {"t1ce", "flair"},
        "oracle": ev.oracle_summary,
        "contribution_note": ev.contribution_note, "test_subjects": len(test_ids),
        "seconds": round(seconds, 1), "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
        "load_average_start": load0, "load_average_end": _load(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch_threads_training": training_threads,
        "precision": fit.precision, "machine": platform.platform(),
        "command": f"mridomain synth demo -o {out} --subjects {subjects} --seed {seed}"
                   + (" --full" if full else "") + (f" --epochs {epochs}" if epochs else ""),
    }
    write_json_atomic(out / "dmap_check.json", check)
    for name in ("contribution.png", "dmap_example.png"):
        if (ev.out / name).exists():
            shutil.copy(ev.out / name, out / name)
    if (out / "run" / "learning_curve.png").exists():
        shutil.copy(out / "run" / "learning_curve.png", out / "learning_curve.png")
    timing = pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in stages.items()]
                          + [{"stage": "total", "seconds": round(seconds, 1)}])
    intro = Section("Demo", text=(
        f"{sim.summary()}\n\nTrained the {DEMO_PRESET} preset ({fit.epochs_run} epochs of "
        f"{run.config.steps_per_epoch} steps, {run.config.batch_size} crop(s) per step, best validation epoch "
        f"{fit.best_epoch}; {_generator_shape(run.config)}; precision {fit.precision}, "
        f"{training_threads} training thread(s)) on {len(run.schema['splits']['train'])} "
        f"subjects with 1-3 of their 4 sequences "
        f"silenced (the paper's incomplete-protocol setting); evaluated on {len(test_ids)} complete test "
        f"subjects.\n\nLoad average {load0} at the start, {check['load_average_end']} at the end, "
        f"{os.cpu_count()} CPUs (the machine may be shared: timings are noisy)."),
        tables=[("time per stage (s)", timing)],
        figures=[("learning curve", out / "run" / "learning_curve.png")],
        note=(f"C_d ranks {top2[0]} and {top2[1]} first; the paper found t1ce and flair on BraTS"
              + ("" if check["c_d_top2_matches_paper"] else ": this run does NOT reproduce that")))
    # the evaluation's "M_d example" section already shows this subject's overlay: only name the files
    nifti = sorted(p.name for p in dmap_files if p.suffix != ".png")
    if nifti:
        intro.text = (intro.text or "") + (f"\n\nM_d of the first test subject as NIfTI in {out / 'dmap'}: "
                                           + ", ".join(nifti))
    evaluation_html(ev, out / "report.html", title="Seq2Seq multi-sequence synthesis demo",
                    extra_sections=[intro], subtitle=check["command"])
    return DemoResult(out, pairs, ev.contribution, check, seconds)
