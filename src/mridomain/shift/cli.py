"""``mridomain shift ...``: the domain-shift study's commands. They parse and call the library.

| command | Python |
| --- | --- |
| ``shift manifest`` | ``manifest_from_index`` / ``manifest_from_dbc`` / ``manifest_from_simulation`` |
| ``shift study`` | ``mridomain.shift.run_study`` |
| ``shift mixing`` | ``mridomain.shift.run_mixing`` |
| ``shift noise`` | ``mridomain.shift.run_noise`` |
| ``shift attribute`` | ``mridomain.shift.attribution.run_attribution`` |
| ``shift report`` | ``mridomain.shift.render_report`` |
| ``shift demo`` | ``mridomain.shift.demo.run_shift_demo`` |
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mridomain.errors import InvalidArgumentError, check_choice, check_range

# errors: the top-level command group (mridomain.cli) prints every MridomainError as one line
app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Scanner domain-shift study: train per scanner domain, test across domains, over seeds.")


def _pair(text: Optional[str], what: str = "--domains") -> Optional[tuple[str, str]]:
    if not text:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) != 2:
        raise InvalidArgumentError(f"{what} takes two comma-separated values, got {text!r}")
    return parts[0], parts[1]


def _numbers(text: Optional[str], what: str) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InvalidArgumentError(f"{what} takes comma-separated numbers, got {text!r}") from None


def _seeds(text: str) -> int | list[int]:
    try:
        return int(text) if "," not in text else [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--seeds takes a count (10) or a list (0,3,7), got {text!r}") from None


_MANIFEST = typer.Argument(..., help="Manifest (parquet or CSV) from `mridomain shift manifest`.")
_OUT = typer.Option(..., "-o", "--out", help="Study folder (resumed when it exists).")
_PRESET = typer.Option(None, help="paper | cpu (default: the folder's config, else paper with CUDA, cpu without).")
_MODEL = typer.Option(None, help="auto | mrnet2d | nodulex | densenet121 | package.module:callable")
_DOMAINS = typer.Option(None, help="The two domains to compare, e.g. GE,SIEMENS (default: the two present).")
_EPOCHS = typer.Option(None, help="Override the preset's epochs.")
_WORKERS = typer.Option(None, help="Runs trained at once (default: all cores; 1 = in this process).")
_BACKEND = typer.Option("process", help="process (local pool) | ray (pip install 'mridomain[distributed]').")
_RAY = typer.Option(None, "--ray-address", help="Ray cluster address (default: a running one, else local).")
_DEVICE = typer.Option(None, help="cpu | cuda (default: cuda when available).")
_STRATIFY = typer.Option(False, "--stratify", help="Split each domain stratified by label (default: the folder's "
                                                   "split, else random within each domain, as the paper).")


def _experiment(func_name: str, manifest: Path, out: Path, seeds: str, preset, model, domains, epochs, workers,
                backend, ray_address, device, stratify=False, **settings) -> None:
    import mridomain.shift as shift
    from mridomain.files import check_output_folder

    check_output_folder(out, "study folder")
    check_range(workers, "--workers", 1)
    check_range(epochs, "--epochs", 1)
    settings = {k: _numbers(v, f"--{k}") for k, v in settings.items()}
    func = getattr(shift, func_name)
    result = func(manifest, out, seeds=_seeds(seeds), preset=preset, model=model, domains=_pair(domains),
                  workers=workers, backend=backend, ray_address=ray_address, epochs=epochs, device=device,
                  stratify=stratify or None, **settings)
    typer.echo(result.summary())
    typer.echo(f"report: {out / 'report.html'}")
    result.raise_if_all_failed()


@app.command()
def manifest(
    source: Path = typer.Argument(..., help="index parquet (--kind index), DBC folder (dbc) or simulated archive (sim)."),
    out: Path = typer.Option(Path("manifest.parquet"), "-o", "--out", help="Manifest to write (.parquet or .csv)."),
    kind: str = typer.Option("index", help="index | dbc | sim"),
    labels: Optional[Path] = typer.Option(None, help="index: table with label + series_uid or patient_id."),
    label_column: str = typer.Option("label", help="index: the labels table's label column."),
    domain_column: str = typer.Option("manufacturer", help="index: the index column defining the domain."),
    domains: Optional[str] = typer.Option(None, help="The two domains kept, e.g. GE,SIEMENS."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name written into the manifest."),
    features: Optional[Path] = typer.Option(None, help="dbc: Clinical_and_Other_Features (.xlsx/.csv)."),
    boxes: Optional[Path] = typer.Option(None, help="dbc: Annotation_Boxes (.xlsx/.csv)."),
    series_pattern: Optional[str] = typer.Option(None, help="dbc: regex of the series folder to crop."),
    phase: Optional[int] = typer.Option(None, help="sim: DCE phase to crop (default: first post-contrast)."),
    threshold: int = typer.Option(2, help="dbc/sim: label = T stage > threshold (the paper: 2)."),
) -> None:
    """Build a study manifest from an index + labels, a DBC download or a simulated archive.

    Python: ``mridomain.shift.manifest_from_index`` / ``manifest_from_dbc`` / ``manifest_from_simulation``.
    """
    from mridomain.shift import manifest_from_dbc, manifest_from_index, manifest_from_simulation, write_manifest

    from mridomain.files import check_output_file

    check_output_file(out, "manifest")
    check_choice(kind, "--kind", ("index", "dbc", "sim"))
    if kind != "index":
        check_range(threshold, "--threshold", 0, 3)   # label = T stage > threshold; T stages run 0..4
    pair = _pair(domains)
    if kind == "index":
        if labels is None:
            raise InvalidArgumentError("--kind index needs --labels")
        build = manifest_from_index(source, labels, domain_column=domain_column, domains=pair,
                                    label_column=label_column, dataset=dataset or "dataset")
    elif kind == "dbc":
        kwargs = {"series_pattern": series_pattern} if series_pattern else {}
        build = manifest_from_dbc(source, features, boxes, threshold=threshold, domains=pair or ("GE", "SIEMENS"),
                                  dataset=dataset or "MRI-Breast", **kwargs)
    elif kind == "sim":
        build = manifest_from_simulation(source, phase=phase, threshold=threshold,
                                         domains=pair or ("GE", "SIEMENS"),
                                         dataset=dataset or "MRI-Breast (simulated)")
    else:
        raise InvalidArgumentError(f"--kind {kind!r}: choose index, dbc or sim")
    write_manifest(build.table, out)
    typer.echo(build.summary())
    typer.echo(f"manifest: {out}")


@app.command()
def study(manifest: Path = _MANIFEST, out: Path = _OUT,
          seeds: str = typer.Option("10", help="Seed count (10 = seeds 0..9) or a list (0,3,7)."),
          preset: Optional[str] = _PRESET, model: Optional[str] = _MODEL, domains: Optional[str] = _DOMAINS,
          epochs: Optional[int] = _EPOCHS, workers: Optional[int] = _WORKERS, backend: str = _BACKEND,
          ray_address: Optional[str] = _RAY, device: Optional[str] = _DEVICE, stratify: bool = _STRATIFY) -> None:
    """The main experiment: Table 2 and Delta (per-seed paired, bootstrap CI, Wilcoxon p).

    Python: ``mridomain.shift.run_study``.
    """
    _experiment("run_study", manifest, out, seeds, preset, model, domains, epochs, workers, backend, ray_address,
                device, stratify)


@app.command()
def mixing(manifest: Path = _MANIFEST, out: Path = _OUT,
           fractions: str = typer.Option("0.1,0.2,0.3,0.4,0.5", help="Target-domain fractions f of the training set."),
           seeds: str = typer.Option("3", help="Seed count or list (the paper: 3)."),
           preset: Optional[str] = _PRESET, model: Optional[str] = _MODEL, domains: Optional[str] = _DOMAINS,
           epochs: Optional[int] = _EPOCHS, workers: Optional[int] = _WORKERS, backend: str = _BACKEND,
           ray_address: Optional[str] = _RAY, device: Optional[str] = _DEVICE, stratify: bool = _STRATIFY) -> None:
    """Appendix A.1: mix target-domain training samples into the training set (Figure 4).

    Python: ``mridomain.shift.run_mixing``.
    """
    _experiment("run_mixing", manifest, out, seeds, preset, model, domains, epochs, workers, backend, ray_address,
                device, stratify, fractions=fractions)


@app.command()
def noise(manifest: Path = _MANIFEST, out: Path = _OUT,
          alphas: str = typer.Option("1,2,3,4,5,7,10,15,30,50", help="Noise standard deviations (stored units)."),
          seeds: str = typer.Option("3", help="Seed count or list (the paper: 3)."),
          preset: Optional[str] = _PRESET, model: Optional[str] = _MODEL, domains: Optional[str] = _DOMAINS,
          epochs: Optional[int] = _EPOCHS, workers: Optional[int] = _WORKERS, backend: str = _BACKEND,
          ray_address: Optional[str] = _RAY, device: Optional[str] = _DEVICE, stratify: bool = _STRATIFY) -> None:
    """Appendix A.2: Gaussian noise on the training images (Figure 5).

    Python: ``mridomain.shift.run_noise``.
    """
    _experiment("run_noise", manifest, out, seeds, preset, model, domains, epochs, workers, backend, ray_address,
                device, stratify, alphas=alphas)


@app.command()
def report(out: Path = typer.Argument(..., metavar="STUDY", help="Study folder.")) -> None:
    """Re-render every table, figure and report.html of a study folder (no training).

    Python: ``mridomain.shift.render_report``.
    """
    from mridomain.shift import render_report

    res = render_report(out)
    typer.echo(res.summary())
    typer.echo(f"report: {res.html}")


@app.command()
def attribute(
    study_dir: Path = typer.Argument(..., metavar="STUDY", help="Study folder whose main experiment ran."),
    archive: Path = typer.Option(..., help="The simulated archive the study's manifest was built from."),
    sim_seed: int = typer.Option(0, help="Seed the archive was simulated with."),
    preset: str = typer.Option("dbc", help="Protocol preset the archive was simulated with."),
    seeds: Optional[str] = typer.Option(None, help="Main seeds to attribute (default: all with kept models)."),
    factors: Optional[str] = typer.Option(None, help="Comma-separated factors (default: recon, coil, "
                                                     "field_strength, timing, matrix, fat_suppression, contrast_agent)."),
    targets: str = typer.Option("test", help="test: the target test patients of the attributed seeds; all: every "
                                             "target-domain patient (more positives)."),
    partners: int = typer.Option(3, help="Source partners per target patient (changes pooled over them)."),
    max_patients: Optional[int] = typer.Option(None, help="At most this many target patients per direction "
                                                          "(half of each class; default: all)."),
    workers: Optional[int] = _WORKERS,
    model: Optional[str] = typer.Option(None, help="The study's user model (package.module:callable), repeated: "
                                                   "a folder never chooses code to run."),
) -> None:
    """Re-image the target test patients with one acquisition factor switched: how much of Delta each recovers.

    Python: ``mridomain.shift.attribution.run_attribution``.
    """
    from mridomain.shift.attribution import PIXEL_FACTORS, run_attribution
    from mridomain.shift.report import render_report

    check_range(workers, "--workers", 1)

    seed_values = None if seeds is None else _seeds(seeds)
    if isinstance(seed_values, int):
        seed_values = list(range(seed_values))
    names = PIXEL_FACTORS if factors is None else tuple(f.strip() for f in factors.split(",") if f.strip())
    res = run_attribution(study_dir, archive, sim_seed=sim_seed, preset=preset, seeds=seed_values, factors=names,
                          target_set=targets, partners=partners, max_patients=max_patients, workers=workers,
                          model=model)
    rendered = render_report(study_dir)
    typer.echo(res.summary.to_string(index=False))
    for line in res.findings:
        typer.echo(f"- {line}")
    typer.echo(f"report: {rendered.html}")


@app.command()
def demo(
    out: Path = typer.Option(Path("shift_demo"), "-o", "--out", help="Folder for the archive, study and report."),
    patients: int = typer.Option(700, help="Simulated patients of a T-stage case-control cohort (half T3/T4)."),
    seed: int = typer.Option(0, help="Simulation seed."),
    main_seeds: int = typer.Option(10, help="Seeds of the main experiment (the paper: 10)."),
    extra_seeds: int = typer.Option(1, help="Seeds of the mixing and noise experiments (the paper: 3; 0: none)."),
    attribution_seeds: int = typer.Option(10, help="Main seeds whose models are attributed (pooled)."),
    threshold: int = typer.Option(2, help="Label = T stage > threshold (the paper: 2)."),
    epochs: Optional[int] = typer.Option(None, help="Override the cpu preset's epochs."),
    workers: Optional[int] = _WORKERS,
) -> None:
    """Simulate a two-vendor DBC-like archive and run the whole study on two tasks (T stage, lesion presence).

    Python: ``mridomain.shift.demo.run_shift_demo``.
    """
    from mridomain.files import check_output_folder
    from mridomain.shift.demo import run_shift_demo

    check_output_folder(out, "--out folder")
    check_range(patients, "--patients", 1, 100_000)
    for value, option in ((main_seeds, "--main-seeds"), (workers, "--workers"), (epochs, "--epochs")):
        check_range(value, option, 1, 1000)
    check_range(extra_seeds, "--extra-seeds", 0, 1000)     # 0: no mixing or noise
    check_range(attribution_seeds, "--attribution-seeds", 0, main_seeds)
    check_range(threshold, "--threshold", 0, 3)       # label = T stage > threshold; T stages run 0..4
    run_shift_demo(out, patients=patients, seed=seed, main_seeds=main_seeds, extra_seeds=extra_seeds,
                   attribution_seeds=attribution_seeds, threshold=threshold, epochs=epochs, workers=workers)
