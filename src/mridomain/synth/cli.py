"""``mridomain synth ...``: parse arguments and call the library (each command names its Python twin)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from mridomain.errors import check_choice, check_range

# errors: the top-level command group (mridomain.cli) prints every MridomainError as one line
app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Seq2Seq multi-sequence synthesis: any sequence to any other, sequence contribution "
                       "ranking (C_t, C_d) and imaging-differentiation maps (M_d).")


#: far above any real run, low enough that a typo fails at once instead of running until killed
MAX_SUBJECTS = 100_000


def _folder_out(path: Optional[Path], what: str) -> None:
    """A one-line error, before any work, for an output folder that cannot be made."""
    if path is not None:
        from mridomain.files import check_output_folder

        check_output_folder(path, what)


def _device(device: Optional[str]) -> None:
    """A device torch does not know (or CUDA on a machine without it): one line, before any work."""
    if device is not None:
        from mridomain.engine.engine import resolve_device

        resolve_device(device)


def _passive_threads() -> None:
    """Let idle OpenMP threads sleep instead of spin. On a shared machine spinning threads fight
    the other jobs for the cores: a cpu-preset training step measured 1.5-4 s with the default
    policy and 0.55 s with this one at a load average of 9 on 2 cores. Read once, when torch loads,
    so it is set before the library is imported; a value the user set is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@app.command()
def brain(
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the subjects (BraTS layout)."),
    subjects: int = typer.Option(20, help="Number of subjects."),
    seed: int = typer.Option(0, help="Random seed (same seed, identical files)."),
    voxel_mm: float = typer.Option(2.0, help="Isotropic voxel size in mm (BraTS: 1)."),
    workers: Optional[int] = typer.Option(None, help="Processes to use (default: all cores)."),
) -> None:
    """Simulate brains with a glioma-like lesion as T1, T1Gd, T2, FLAIR (+ seg) NIfTI.

    Python: ``mridomain.sim.brain.simulate_brains``.
    """
    from mridomain.sim.brain import simulate_brains

    _folder_out(out, "--out folder")
    check_range(subjects, "--subjects", 1, MAX_SUBJECTS)
    check_range(workers, "--workers", 1)
    result = simulate_brains(out, n_subjects=subjects, seed=seed, voxel_mm=voxel_mm, workers=workers)
    typer.echo(result.summary())


@app.command()
def toy(
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the dataset, runs, fig4.csv/png, report.html."),
    preset: str = typer.Option("cpu", help="paper (128 px, 9,000/1,000/10,000) | cpu (small)"),
    seed: int = typer.Option(0, help="Random seed."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
) -> None:
    """The paper's toy dataset and its Fig. 4 experiment (ResNet-18 with and without M_d).

    Python: ``mridomain.synth.run_toy_experiment``.
    """
    _passive_threads()
    from mridomain.synth.toy import run_toy_experiment

    _folder_out(out, "--out folder")
    _device(device)
    result = run_toy_experiment(out, preset=preset, seed=seed, device=device)
    typer.echo(result.to_markdown())
    typer.echo(f"report: {out / 'report.html'}")


@app.command()
def train(
    data: Path = typer.Argument(..., help="Folder of subjects in the BraTS layout."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder."),
    preset: str = typer.Option("cpu", help="paper | cpu | cpu-fullres (the synth demo's generator; not the paper's shape)"),
    epochs: Optional[int] = typer.Option(None, help="Override the preset's epoch count."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT."),
    seed: int = typer.Option(0, help="Random seed."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Train subjects lacking a sequence file with it unavailable."),
    perceptual_weights: Optional[Path] = typer.Option(None, help="VGG19 weights file: turns the perceptual term on."),
    cache: Optional[Path] = typer.Option(None, help="Folder for memory-mapped volumes (data larger than memory)."),
    normalization: Optional[str] = typer.Option(
        None, help="percentile (the paper's: each volume's 0.5 / 99.5 head percentiles) | median (each volume's "
                   "head median, levels fitted on the training subjects). Default: the preset's."),
) -> None:
    """Train one Seq2Seq generator for every source -> target pair.

    Python: ``mridomain.synth.train``.
    """
    _passive_threads()
    from mridomain.synth.training import train as run_training

    _folder_out(out, "run folder")
    _folder_out(cache, "--cache folder")
    check_range(epochs, "--epochs", 1)
    _device(device)
    extra = {"perceptual_weights": str(perceptual_weights)} if perceptual_weights else {}
    if normalization is not None:
        from mridomain.synth.data import NORMALIZATION_KINDS

        check_choice(normalization, "--normalization", NORMALIZATION_KINDS)
        extra["normalization"] = normalization
    result = run_training(data, out, preset=preset, epochs=epochs, resume=resume, seed=seed, device=device,
                          allow_missing=allow_missing, cache=cache, **extra)
    typer.echo(result.summary())


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run folder from `mridomain synth train`."),
    data: Optional[Path] = typer.Option(None, help="Subjects to evaluate (default: the run's data)."),
    split: str = typer.Option("test", help="train | val | test | all"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder (default RUN/eval_<split>)."),
    lpips_weights: Optional[Path] = typer.Option(None, help="VGG16 weights for LPIPS (off without)."),
    lpips_lin: Optional[Path] = typer.Option(None, help="LPIPS layer weights (lin0..lin4)."),
) -> None:
    """Table 1 (PSNR / SSIM per pair), Table 2 (C_t, C_d), M_d check, model profile, report.html.

    Python: ``mridomain.synth.evaluate``.
    """
    _passive_threads()
    from mridomain.synth.evaluation import evaluate as run_evaluation

    result = run_evaluation(run, data=data, split=split, out=out, lpips_weights=lpips_weights,
                            lpips_lin=lpips_lin)
    typer.echo(result.to_markdown())
    typer.echo(f"report: {result.out / 'report.html'}")


@app.command()
def contribution(
    run: Path = typer.Argument(..., help="Run folder (its eval_<split>/pairs_subjects.csv is used, or made)."),
    split: str = typer.Option("test", help="Split whose evaluation is ranked."),
    normalization: str = typer.Option("zscore", help="zscore (the authors' code) | minmax"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="CSV to write (default RUN/eval_<split>/...)."),
) -> None:
    """Sequence contribution: C_t, C_d and their ranks (eq. 4, Table 2), with a heat map.

    Python: ``mridomain.synth.rank_sequences``.
    """
    _passive_threads()
    from mridomain.synth.evaluation import rank_sequences

    check_choice(normalization, "--normalization", ("zscore", "minmax"))
    if out is not None:
        from mridomain.files import check_output_file

        check_output_file(out, "--out table")
    table, note = rank_sequences(run, split=split, normalization=normalization, out=out)
    from mridomain.report import df_to_markdown

    typer.echo(note)
    typer.echo(df_to_markdown(table.round(3)))


@app.command()
def dmap(
    run: Path = typer.Argument(..., help="Run folder."),
    subject: Path = typer.Argument(..., help="Subject folder (BraTS layout)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder (default: the subject's folder)."),
    match_gain: bool = typer.Option(False, "--match-gain", help="Scale each generated volume by its least-squares "
                                    "gain to the target first (not in the paper): leaves out a per-volume "
                                    "intensity scale; writes *_dmap_gain_matched*."),
) -> None:
    """Imaging-differentiation maps M_d (eq. 5) of one subject: NIfTI on its grid + overlay PNG.

    Python: ``mridomain.synth.dmap``.
    """
    _passive_threads()
    from mridomain.synth.apply import dmap as run_dmap

    _folder_out(out, "--out folder")
    paths = run_dmap(run, subject, out, match_gain=match_gain)
    typer.echo("\n".join(str(p) for p in paths))


@app.command()
def generate(
    run: Path = typer.Argument(..., help="Run folder."),
    inputs: List[str] = typer.Argument(..., help="NIfTI files named *_<seq>.nii.gz, or SEQ=PATH."),
    to: str = typer.Option(..., "--to", help="Sequence to generate, e.g. flair."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="NIfTI to write."),
) -> None:
    """Fill a missing sequence of a subject from the sequences it has.

    Python: ``mridomain.synth.generate``.
    """
    _passive_threads()
    from mridomain.synth.apply import generate as run_generate

    if out is not None:
        from mridomain.files import check_output_file

        check_output_file(out, "--out NIfTI")
    result = run_generate(run, inputs, to, out)
    typer.echo(result.summary())


@app.command()
def demo(
    out: Path = typer.Option(Path("synth_demo"), "-o", "--out", help="Folder for everything the demo makes."),
    subjects: Optional[int] = typer.Option(None, help="Simulated subjects (split 75 / 10 / 15 %; default 36, "
                                                      "60 with --full)."),
    seed: int = typer.Option(0, help="Random seed."),
    epochs: Optional[int] = typer.Option(None, help="Override the cpu preset's epoch count."),
    full: bool = typer.Option(False, "--full", help="The longer run the docs quote (at most 45 min)."),
) -> None:
    """Simulate brains, train (cpu preset), evaluate, rank the sequences and map M_d.

    Python: ``mridomain.synth.run_demo``.
    """
    _passive_threads()
    from mridomain.synth.demo import run_demo

    _folder_out(out, "--out folder")
    check_range(subjects, "--subjects", 1, MAX_SUBJECTS)
    check_range(epochs, "--epochs", 1)
    result = run_demo(out, subjects=subjects, seed=seed, epochs=epochs, full=full)
    typer.echo(result.summary())
    typer.echo(f"report: {result.out / 'report.html'}")


def _is_demo(data: Path) -> bool:
    """``DATA`` given as the word ``demo`` (and no folder of that name here) runs the command's demo."""
    return str(data) == "demo" and not data.is_dir()


@app.command()
def subsets(
    data: Path = typer.Argument(..., help="Folder of subjects in the BraTS layout with _seg files, or 'demo'."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder for table3.csv/png, report.html, runs/ "
                                                                  "(demo default: subsets_demo)."),
    combinations: Optional[List[str]] = typer.Option(None, "--combination", "-c", help=(
        "Sequence combination such as t1ce+flair (repeatable), or paper (Table 3's five rows), default "
        "(every single, every pair, all four). All four is always added as the reference.")),
    preset: str = typer.Option("cpu", help="paper (3-D DynUNet, nnU-Net settings) | cpu (2.5-D UNet)"),
    epochs: Optional[int] = typer.Option(None, help="Override the preset's epoch count."),
    seed: int = typer.Option(0, help="Random seed (the same split and seed for every combination)."),
    subjects: int = typer.Option(24, help="demo only: simulated subjects."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
) -> None:
    """Table 3: a segmentation network per sequence combination, DSC / HD95 / ASSD per ET, TC, WT, and the
    one-sided paired t-test of each combination against all four.

    Python: ``mridomain.synth.subsets.run_subsets`` (demo: ``run_subsets_demo``).
    """
    _passive_threads()
    from mridomain.synth.subsets import run_subsets, run_subsets_demo

    demo = _is_demo(data)
    if not demo and out is None:
        raise typer.BadParameter("-o/--out is required", param_hint="--out")
    out = out or Path("subsets_demo")
    _folder_out(out, "--out folder")            # before any training, as every other command
    check_range(subjects, "--subjects", 1, MAX_SUBJECTS)
    check_range(epochs, "--epochs", 1)
    if demo:
        result = run_subsets_demo(out, subjects=subjects, seed=seed, combinations=combinations or ("paper",),
                                  epochs=epochs)
    else:
        result = run_subsets(data, out, combinations=combinations, preset=preset, seed=seed, epochs=epochs,
                             device=device)
    typer.echo(result.to_markdown())
    typer.echo(f"report: {out / 'report.html'}")


@app.command()
def downstream(
    data: Path = typer.Argument(..., help="Folder of subjects in the BraTS layout, or 'demo'."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV of subject id and 0/1 label "
                                                                  "(BraTS21_ID,MGMT_value runs as is)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Seq2Seq run folder that computes M_d."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder for table4.csv, fig7_roc.png, "
                                                                  "report.html (demo default: downstream_demo)."),
    preset: str = typer.Option("cpu", help="paper (3-D ResNet-18) | cpu (2-D ResNet-18, quarter width)"),
    outer_folds: Optional[int] = typer.Option(None, help="Outer folds of the nested CV (default 5)."),
    inner_folds: Optional[int] = typer.Option(None, help="Inner folds (default 4)."),
    epochs: Optional[int] = typer.Option(None, help="Override the preset's epoch count."),
    id_column: Optional[str] = typer.Option(None, help="Id column of the labels CSV (default: BraTS21_ID or the first)."),
    label_column: Optional[str] = typer.Option(None, help="Label column (default: MGMT_value or the second)."),
    seed: int = typer.Option(0, help="Random seed (the same folds and seeds for every input)."),
    subjects: int = typer.Option(40, help="demo only: simulated subjects."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
) -> None:
    """Table 4 / Fig. 7: ResNet-18 on T1+T2, T1Gd+FLAIR and All, with and without M_d, in subject-level
    nested cross-validation; AUC and accuracy with bootstrap intervals and the paired M_d difference.

    Python: ``mridomain.synth.downstream.run_downstream`` (demo: ``run_downstream_demo``).
    """
    _passive_threads()
    from mridomain.synth.downstream import run_downstream, run_downstream_demo

    demo = _is_demo(data)
    if not demo:
        for name, value in (("--labels", labels), ("--run", run), ("--out", out)):
            if value is None:
                raise typer.BadParameter(f"{name} is required", param_hint=name)
    out = out or Path("downstream_demo")
    _folder_out(out, "--out folder")            # before any training, as every other command
    check_range(subjects, "--subjects", 1, MAX_SUBJECTS)
    check_range(epochs, "--epochs", 1)
    check_range(outer_folds, "--outer-folds", 2)
    check_range(inner_folds, "--inner-folds", 2)
    if demo:
        result = run_downstream_demo(out, subjects=subjects, seed=seed, outer_folds=outer_folds or 5,
                                     inner_folds=inner_folds or 4, epochs=epochs)
    else:
        result = run_downstream(data, labels, run, out, preset=preset, seed=seed, epochs=epochs,
                                outer_folds=outer_folds, inner_folds=inner_folds, id_column=id_column,
                                label_column=label_column, device=device)
    typer.echo(result.to_markdown())
    typer.echo(f"report: {out / 'report.html'}")


@app.command()
def breast(
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the exams (synthesis subject layout)."),
    patients: int = typer.Option(20, help="Number of patients (every one with a carcinoma)."),
    seed: int = typer.Option(0, help="Random seed (same seed, identical files)."),
    slices: int = typer.Option(4, help="Axial slices through the lesion (6 mm apart)."),
    workers: Optional[int] = typer.Option(None, help="Processes to use (default: all cores)."),
) -> None:
    """Simulate the paper's breast protocol (Philips Ingenia 3.0 T): T1, FatSatT1, T2, DCE and FatSatDCE
    (6 time points), wash-in, wash-out, DWI (b 0/150/800/1500) as NIfTI, 4-D sequences as 4-D files.

    Python: ``mridomain.sim.breast.exams.simulate_breast_exams``.
    """
    from mridomain.sim.breast.exams import simulate_breast_exams

    _folder_out(out, "--out folder")
    check_range(patients, "--patients", 1, MAX_SUBJECTS)
    check_range(slices, "--slices", 1, 64)
    check_range(workers, "--workers", 1)
    result = simulate_breast_exams(out, n_patients=patients, seed=seed, slices=slices, workers=workers)
    typer.echo(result.summary())


@app.command("breast-demo")
def breast_demo(
    out: Path = typer.Option(Path("breast_demo"), "-o", "--out", help="Folder for everything the demo makes."),
    patients: int = typer.Option(30, help="Simulated exams (split 70 / 10 / 20 %)."),
    seed: int = typer.Option(0, help="Random seed."),
    epochs: Optional[int] = typer.Option(None, help="Override the cpu preset's epoch count."),
    steps_per_epoch: Optional[int] = typer.Option(None, help="Override the cpu preset's steps per epoch."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
) -> None:
    """The breast protocol end to end: simulate, train (cpu preset), C_t / C_d beside the paper's Table 2
    and the oracle order, M_d overlays (Fig. 6).

    Python: ``mridomain.synth.breast.run_breast_demo``.
    """
    _passive_threads()
    from mridomain.synth.breast import run_breast_demo

    _folder_out(out, "--out folder")
    check_range(patients, "--patients", 10, MAX_SUBJECTS)
    check_range(epochs, "--epochs", 1)
    check_range(steps_per_epoch, "--steps-per-epoch", 1)
    _device(device)
    result = run_breast_demo(out, patients=patients, seed=seed, epochs=epochs, steps_per_epoch=steps_per_epoch,
                             device=device)
    typer.echo(result.summary())
    typer.echo(f"report: {result.out / 'report.html'}")


@app.command("breast-fig7")
def breast_fig7(
    run: Path = typer.Option(Path("breast_demo/run"), "--run", help="Seq2Seq run that computes M_d (breast-demo's)."),
    out: Path = typer.Option(Path("breast_fig7"), "-o", "--out", help="Folder for exams, table4.csv, fig7_roc.png."),
    patients: int = typer.Option(120, help="Simulated exams of the response cohort."),
    seed: int = typer.Option(1, help="Random seed (a cohort the Seq2Seq run never saw: not the demo's 0)."),
    outer_folds: int = typer.Option(5, help="Outer folds of the nested CV."),
    inner_folds: int = typer.Option(2, help="Inner folds."),
    epochs: Optional[int] = typer.Option(None, help="Override the classifier preset's epoch count."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
) -> None:
    """Fig. 7 on the simulator: simulated pCR from wash-in, with and without M_d (ResNet-18, nested CV,
    bootstrap intervals, ROC curves).

    Python: ``mridomain.synth.breast.run_breast_fig7``.
    """
    _passive_threads()
    from mridomain.synth.breast import run_breast_fig7

    _folder_out(out, "--out folder")
    if not (run / "config.json").exists():
        raise typer.BadParameter(f"{run}: not a Seq2Seq run folder (no config.json); run `mridomain synth "
                                 "breast-demo` first or pass --run", param_hint="--run")
    check_range(patients, "--patients", 10, MAX_SUBJECTS)
    check_range(outer_folds, "--outer-folds", 2)
    check_range(inner_folds, "--inner-folds", 2)
    check_range(epochs, "--epochs", 1)
    _device(device)
    result = run_breast_fig7(run, out, patients=patients, seed=seed, outer_folds=outer_folds,
                             inner_folds=inner_folds, epochs=epochs, device=device)
    typer.echo(result.to_markdown())
    typer.echo(f"report: {out / 'report.html'}")
