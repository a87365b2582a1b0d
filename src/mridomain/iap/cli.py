"""The IAP prediction room's commands: train, evaluate, predict, calibrate, demo, analyze, route,
route-experiment, compare. The top-level ``mridomain`` app mounts them at its top level (the
commands stay ``mridomain train``, ``mridomain predict``, ...). Parses arguments and calls the
library; no logic lives here. Every command has a Python twin, named in its docstring.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mridomain.arguments import (KEEP_KIND_HELP, MAX_PATIENTS, MAX_SLICES, at_least, file_out, folder_out)
from mridomain.errors import InvalidArgumentError

app = typer.Typer(add_completion=False)


@app.command()
def train(
    cache: Path = typer.Argument(..., help="Slice cache from `mridomain prepare`."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder (checkpoint, config, logs)."),
    preset: str = typer.Option("cpu", help="paper | cpu"),
    epochs: Optional[int] = typer.Option(None, help="Override the preset's epoch count."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint."),
    seed: int = typer.Option(0, help="Random seed."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate",
                                   help="Calibrate the run's trust (temperatures, training domain) after "
                                        "training; --no-calibrate skips it (`mridomain calibrate RUN` adds "
                                        "it later)."),
) -> None:
    """Train the multi-task IAP network on a slice cache.

    Python: ``mridomain.iap.train`` / ``IAPPredictor.fit``.
    """
    from mridomain.iap import train as run_training

    folder_out(out, "--out")
    at_least(epochs, "--epochs", 1)
    at_least(seed, "--seed", 0)
    result = run_training(cache, out, preset=preset, epochs=epochs, resume=resume, seed=seed, device=device,
                          calibrate=calibrate)
    typer.echo(result.summary())


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run folder from `mridomain train`."),
    cache: Optional[Path] = typer.Option(None, help="Cache to evaluate on (default: the training cache)."),
    split: str = typer.Option("test", help="train | val | test | all"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder for tables and figures."),
    html: bool = typer.Option(True, "--html/--no-html", help="Also write a self-contained report.html."),
) -> None:
    """Table 1: top-1 / top-2 / MSE for every IAP, confusion matrices, per-series accuracy.

    Python: ``mridomain.iap.evaluate``.
    """
    from mridomain.iap import evaluate as run_evaluation

    if out is not None:
        folder_out(out, "--out")
    report = run_evaluation(run, cache=cache, split=split, out=out, html=html)
    typer.echo(report.to_markdown())
    typer.echo(f"wrote {report.out}")
    if html:
        typer.echo(f"report: {Path(report.out) / 'report.html'}")


_HEADER_MISS_HELP = ("What a header value outside the training domain does: out (the input is out of domain) | "
                     "warn (only named). Default: the run's rule (out).")
_HEADER_IAPS_HELP = ("Comma-separated IAPs whose header values count (default: the run's rule: manufacturer, "
                     "scanner_model, patient_position, acquisition_matrix, flip_angle, tr, te).")


def _domain_rule(run: Path, header_miss: Optional[str], header_iaps: Optional[str]):
    """The run's header rule with the options' changes; None when neither option is given."""
    if header_miss is None and header_iaps is None:
        return None
    from mridomain.iap.domain import DomainModel, DomainRule

    if header_miss is not None and header_miss not in ("out", "warn"):
        raise InvalidArgumentError(f"--header-miss {header_miss}: choose out or warn")
    domain = DomainModel.load(run) if run.is_dir() else None
    rule = domain.rule if domain is not None else DomainRule()
    changes: dict = {}
    if header_miss is not None:
        changes["header_miss"] = header_miss
    if header_iaps is not None:
        names = tuple(i.strip() for i in header_iaps.split(",") if i.strip())
        if (run / "labels.json").is_file():      # a name the run does not predict would be ignored silently
            from mridomain.iap.labels import LabelEncoder

            known = [h.name for h in LabelEncoder.from_json(run / "labels.json").heads]
            unknown = [n for n in names if n not in known]
            if unknown:
                raise InvalidArgumentError(f"--header-iaps {','.join(unknown)}: not an IAP of {run} "
                                           f"(choose from {', '.join(known)})")
        changes["header_iaps"] = names
    return rule.updated(**changes)


_ENGINE_HELP = ("auto | onnx | onnx-int8 | torch: ONNX Runtime on the run's model.onnx, or PyTorch "
                "(auto: ONNX Runtime where it can run, else PyTorch, and the output says why).")


@app.command()
def predict(
    run: Path = typer.Argument(..., help="Run folder from `mridomain train`."),
    paths: List[Path] = typer.Argument(..., help="DICOM files or series folders, NIfTI volumes, PNGs."),
    out: Path = typer.Option(Path("predictions.csv"), "-o", "--out", help="CSV (or .json) to write."),
    top_k: int = typer.Option(2, help="How many ranked values to report per categorical IAP."),
    figure: Optional[Path] = typer.Option(None, help="Also draw slices with their predicted IAPs."),
    abstain: bool = typer.Option(False, "--abstain", help="Answer 'unknown' for images outside the training domain."),
    combinations: Optional[Path] = typer.Option(None, help="CSV of allowed IAP combinations for the joint answer "
                                                         "(default: the combinations seen in training)."),
    keep_kind: List[str] = typer.Option([], "--keep-kind", help=KEEP_KIND_HELP),
    header_miss: Optional[str] = typer.Option(None, help=_HEADER_MISS_HELP),
    header_iaps: Optional[str] = typer.Option(None, help=_HEADER_IAPS_HELP),
    engine: str = typer.Option("auto", help=_ENGINE_HELP),
) -> None:
    """Predict the acquisition parameters of images from their pixels alone.

    Every row says whether the image lies inside the run's training domain, judged on its image and,
    where it has one, its header, and why not (domain_reason). PATHS may be archive
    folders: every series (and every volume of a multi-volume series) in them is predicted.
    Exits with code 1 when nothing could be read.

    Python: ``mridomain.iap.predict_paths``.
    """
    from mridomain.iap import predict_paths

    file_out(out, "--out")
    if figure is not None:
        file_out(figure, "--figure")
    at_least(top_k, "--top-k", 1)
    rule = _domain_rule(run, header_miss, header_iaps)
    result = predict_paths(run, paths, out=out, top_k=top_k, figure=figure, abstain=abstain,
                           combinations=combinations, keep_kinds=keep_kind, rule=rule, engine=engine)
    typer.echo(result.summary())


@app.command()
def calibrate(
    run: Path = typer.Argument(..., help="Run folder from `mridomain train`."),
    cache: Optional[Path] = typer.Option(None, help="Cache to calibrate on (default: the training cache)."),
    outlier_exposure: bool = typer.Option(True, "--outlier-exposure/--no-outlier-exposure",
                                          help="The outlier-exposed image score (default) or the single "
                                               "Mahalanobis distance of earlier runs (docs/ood.md)."),
) -> None:
    """Fit temperatures, the training domain and the seen IAP combinations into a run folder.

    `train` does this at the end of every run; use it on runs trained before.
    Python: ``mridomain.iap.calibrate``.
    """
    from mridomain.iap import calibrate as run_calibration

    summary = run_calibration(run, cache=cache, outlier_exposure=outlier_exposure)
    for head, h in summary["heads"].items():
        kept = (f" (fitted T = {h['fitted_temperature']:.3f} raised ECE to {100 * h['ece_fitted']:.2f}%: kept raw)"
                if h.get("kept_raw") else "")
        typer.echo(f"{head}: T = {h['temperature']:.3f}, ECE {100 * h['ece_before']:.2f}% -> "
                   f"{100 * h['ece_after']:.2f}% ({summary['split']}, N = {h['n']}){kept}")
    typer.echo(summary["domain"]["note"])
    for column, rates in summary["domain"].get("in_domain_by", {}).items():
        typer.echo(f"cross-fitted in-domain slices kept per {column}: "
                   + ", ".join(f"{k} {100 * v:.0f}%" for k, v in rates.items()))
    typer.echo(f"wrote {run}/calibration.json, domain.json, domain.safetensors, combinations.json")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "-o", "--out", help="Folder for everything the demo makes."),
    patients: int = typer.Option(600, help="Simulated patients."),
    slices: int = typer.Option(3, help="Slices per simulated series."),
    epochs: Optional[int] = typer.Option(None, help="Override the cpu preset's epoch count."),
    seed: int = typer.Option(0, help="Random seed."),
    full: bool = typer.Option(False, "--full", help="Also run analyze, the Table 2 routing experiment and compare."),
    reuse: bool = typer.Option(False, "--reuse", help="With --full: keep the finished demo in OUT (steps 1-5) and "
                                                     "add only steps 6-8."),
) -> None:
    """Simulate a DBC-like dataset, index, prepare, train (cpu preset), evaluate: prints Table 1.

    Python: ``mridomain.iap.demo.run_demo``.
    """
    from mridomain.iap.demo import run_demo

    folder_out(out, "--out")
    for value, option in ((patients, "--patients"), (slices, "--slices"), (epochs, "--epochs")):
        at_least(value, option, 1)
    at_least(patients, "--patients", 1, MAX_PATIENTS)
    at_least(slices, "--slices", 1, MAX_SLICES)
    at_least(seed, "--seed", 0)
    run_demo(out, patients=patients, seed=seed, slices=slices, epochs=epochs, full=full, reuse=reuse)


@app.command()
def analyze(
    source: Path = typer.Argument(..., metavar="INDEX_OR_CACHE", help="Index parquet or slice cache folder."),
    out: Path = typer.Option(Path("analysis"), "-o", "--out", help="Folder for tables, figures, report.html."),
    split_column: str = typer.Option("split", help="Split column (absent: one split 'all')."),
    html: bool = typer.Option(True, "--html/--no-html", help="Also write the self-contained report.html."),
) -> None:
    """IAP histograms per split, associations between IAPs, combination overlap (Table 3), imbalance.

    Python: ``mridomain.iap.analyze``.
    """
    from mridomain.iap import analyze as run_analysis

    folder_out(out, "--out")
    result = run_analysis(source, out, split_column=split_column, html=html)
    typer.echo(result.to_markdown())
    if html:
        typer.echo(f"report: {result.files['report']}")


@app.command()
def route(
    run: Path = typer.Argument(..., help="IAP run folder from `mridomain train`."),
    paths: List[Path] = typer.Argument(..., help="DICOM files/series folders, NIfTI, PNGs."),
    model: List[str] = typer.Option(..., "--model", help="VALUE=FOLDER of a saved downstream classifier; repeat."),
    key: str = typer.Option("manufacturer", help="IAP whose predicted value picks the model."),
    default: Optional[str] = typer.Option(None, help="Model VALUE for predicted values without a model."),
    out: Path = typer.Option(Path("routed.csv"), "-o", "--out", help="CSV to write."),
    abstain: bool = typer.Option(False, "--abstain", help="Send images outside the IAP run's training domain nowhere."),
    header_miss: Optional[str] = typer.Option(None, help=_HEADER_MISS_HELP),
    header_iaps: Optional[str] = typer.Option(None, help=_HEADER_IAPS_HELP),
    engine: str = typer.Option("auto", help=_ENGINE_HELP),
) -> None:
    """Send each image to the downstream model of its predicted acquisition domain.

    Python: ``mridomain.iap.route``.
    """
    from mridomain.iap import route as run_route
    from mridomain.iap.routing import parse_model_specs

    file_out(out, "--out")
    rule = _domain_rule(run, header_miss, header_iaps)
    table = run_route(paths, run, parse_model_specs(model), key_iap=key, default=default,
                      unknown="error" if default else "most_likely", out=out, abstain=abstain, rule=rule,
                      engine=engine)
    typer.echo(table.attrs.get("engine", ""))
    typer.echo(table["model"].value_counts(dropna=False).to_string())
    if "domain_reason" in table.columns:
        from mridomain.iap.domain import reason_counts

        by = ", ".join(f"{n} {r}" for r, n in reason_counts(table).items())
        typer.echo(f"in-domain verdicts by reason: {by}")
    typer.echo(f"wrote {out}")


@app.command("route-experiment")
def route_experiment(
    cache: Path = typer.Argument(..., help="Slice cache with tumor labels."),
    run: Path = typer.Argument(..., help="IAP run folder."),
    out: Path = typer.Option(Path("routing"), "-o", "--out", help="Folder for Table 2, models, report."),
    key: str = typer.Option("manufacturer", help="IAP whose value defines the domains."),
    domains: str = typer.Option("GE,SIEMENS", help="Comma-separated values of KEY that get a model."),
    preset: str = typer.Option("cpu", help="paper (ResNet-18) | cpu (small CNN)"),
    epochs: Optional[int] = typer.Option(None, help="Override the preset's epoch count."),
    seed: int = typer.Option(0, help="Random seed."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
) -> None:
    """Paper Table 2: per-domain tumor classifiers, each alone vs routed by predicted / true IAP.

    Python: ``mridomain.iap.run_routing_experiment``.
    """
    from mridomain.iap import run_routing_experiment

    folder_out(out, "--out")
    at_least(epochs, "--epochs", 1)
    at_least(seed, "--seed", 0)
    exp = run_routing_experiment(cache, run, out, key_iap=key, domains=tuple(domains.split(",")),
                                 preset=preset, seed=seed, epochs=epochs, device=device)
    typer.echo(exp.to_markdown())
    typer.echo(f"report: {exp.files['report']}")


@app.command()
def compare(
    train_cache: Path = typer.Argument(..., metavar="TRAIN", help="Training slice cache."),
    new: List[Path] = typer.Argument(..., metavar="NEW", help="A slice cache folder, or image files/folders."),
    run: Path = typer.Option(..., "--run", help="IAP run folder."),
    out: Path = typer.Option(Path("compare"), "-o", "--out", help="Folder for verdicts and report.html."),
    header_miss: Optional[str] = typer.Option(None, help=_HEADER_MISS_HELP),
    header_iaps: Optional[str] = typer.Option(None, help=_HEADER_IAPS_HELP),
    engine: str = typer.Option("auto", help=_ENGINE_HELP),
) -> None:
    """Applicability check: label-free shift of NEW against in-domain data, and predict's verdict per image.

    The verdict uses the run's one threshold and header rule, as predict and route do.

    Python: ``mridomain.iap.compare``.
    """
    from mridomain.iap import compare as run_compare

    folder_out(out, "--out")
    rule = _domain_rule(run, header_miss, header_iaps)
    res = run_compare(train_cache, new, run, out, rule=rule, engine=engine)
    typer.echo(res.to_markdown())
    typer.echo(f"report: {res.files['report']}")
