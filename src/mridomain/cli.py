"""Command-line interface: parses arguments and calls the library. No logic lives here.

Every command has a Python twin, named in its docstring.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from mridomain.errors import InvalidArgumentError, MridomainError
from mridomain.synth.cli import app as synth_app


#: exit code of an error the code did not foresee (a bug); bad input and a failed run exit 1,
#: a bad command line 2 (click's usage errors)
EXIT_UNEXPECTED = 3


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _plain_help(text: Optional[str]) -> Optional[str]:
    """Help text as the reader should see it: `code` in single backticks (docstrings use Sphinx's
    double ones) and brackets kept (Rich would take ``'mridomain[distributed]'`` for markup and drop
    ``[distributed]``)."""
    if not text:
        return text
    from rich.markup import escape

    return escape(text.replace("``", "`"))


def _house_style(command) -> None:  # noqa: ANN001 (a click command of typer's vendored click)
    """One convention for every command's help, sub-commands included: no Rich markup in texts,
    arguments as upper-case names (RUN PATHS...), flags without a value type (see
    :func:`_conventional_params`)."""
    command.help = _plain_help(command.help)
    command.short_help = _plain_help(command.short_help)
    for param in command.params:
        param.help = _plain_help(getattr(param, "help", None))
        if param.param_type_name == "argument" and param.metavar is None:
            param.metavar = param.name.upper()
    for sub in getattr(command, "commands", {}).values():
        _house_style(sub)


def _conventional_params() -> None:
    """Typer (0.2x) prints a flag with a ``<bool>`` value it does not take, and a required argument
    as ``{run}``; this gives flags no value type and arguments click's ``RUN`` / ``[RUN]`` /
    ``PATHS...``. tests/test_cli.py walks every command's help to check the convention holds."""
    from typer import core

    option_type = getattr(core.TyperOption, "display_type_rich", None)
    if option_type is not None and not getattr(option_type, "_mridomain", False):
        def display_type_rich(self, ctx):  # noqa: ANN001, ANN202
            return None if self.is_flag else option_type(self, ctx)

        display_type_rich._mridomain = True  # type: ignore[attr-defined]
        core.TyperOption.display_type_rich = display_type_rich
    if hasattr(core.TyperArgument, "_usage_display_name"):
        def usage_name(self) -> str:  # noqa: ANN001
            name = self.metavar or self.name.upper()
            name = name if self.required else f"[{name}]"
            return name + ("..." if self.nargs != 1 else "")

        core.TyperArgument._usage_display_name = usage_name


class _Commands(TyperGroup):
    """The one error handler of every command (sub-apps included): a :class:`MridomainError` is
    printed as one red line and the command exits with code 1, never with a traceback. An
    operating-system error (a folder that cannot be written, a full disk) is one line naming the
    file, also exit 1. Anything else is a bug: one line, exit 3, and the traceback only when
    ``MRIDOMAIN_DEBUG=1``. It also gives
    every command's help the one house style (:func:`_house_style`)."""

    def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        _conventional_params()
        _house_style(self)

    def invoke(self, ctx):  # type: ignore[override]
        import os

        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):   # usage errors and exits: typer prints them
            raise
        except MridomainError as err:
            typer.secho(f"error: {_one_line(err)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            typer.secho("error: interrupted (finished work is kept; run again to resume)", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=130) from None
        except OSError as err:
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            typer.secho(f"error: {where}{_one_line(err.strerror or err)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None
        except Exception as err:  # noqa: BLE001 - the last guard: one line, never a traceback
            if os.environ.get("MRIDOMAIN_DEBUG"):
                raise
            typer.secho(f"error: unexpected {type(err).__name__}: {_one_line(err)} (a bug in mridomain: please "
                        "report it; MRIDOMAIN_DEBUG=1 shows the traceback)", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=EXIT_UNEXPECTED) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True,
                  help="mridomain: the acquisition domain of MRI.")
app.add_typer(synth_app, name="synth")

from mridomain.shift.cli import app as shift_app  # noqa: E402  (the sub-app registers below)

app.add_typer(shift_app, name="shift")


def _one_line_warnings() -> None:
    """Warnings that reach the command line (a damaged log line skipped, subjects skipped) are one
    line each, ``warning: ...``; what libraries say about single files goes into skip reports, and
    their loggers are kept off the terminal (pydicom logs every failed decoder attempt)."""
    import logging
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        typer.secho(f"warning: {_one_line(message)}", fg=typer.colors.YELLOW, err=True)

    warnings.showwarning = show
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mridomain {version('mridomain')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (for logs).")) -> None:
    """mridomain: the acquisition domain of MRI."""
    _one_line_warnings()
    if quiet:
        from mridomain.progress import set_quiet

        set_quiet()


def _file_out(path: Path, option: str) -> Path:
    """An output that must be a file: a one-line error, before any work, when it cannot be."""
    from mridomain.files import check_output_file

    return check_output_file(path, f"{option} output")


def _folder_out(path: Path, option: str) -> Path:
    """An output that must be a folder: a one-line error, before any work, when it cannot be."""
    from mridomain.files import check_output_folder

    return check_output_folder(path, f"{option} output")


def _at_least(value: Optional[float], option: str, minimum: float, maximum: float | None = None) -> None:
    """A one-line error for a number outside what the option accepts (None: not given)."""
    from mridomain.errors import check_range

    check_range(value, option, minimum, maximum)


#: Upper bounds of counts: far above any real run, low enough that a typo fails at once instead
#: of running until killed (DBC, the largest archive simulated here, has 922 patients).
MAX_PATIENTS = 100_000
MAX_SLICES = 4096


def _numbers(text: str, option: str, count: int | None = None) -> tuple[float, ...]:
    """``"0.7,0.15,0.15"`` -> floats, with a one-line error naming the option."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InvalidArgumentError(f"{option} {text!r}: expected comma-separated numbers") from None
    if count is not None and len(values) != count:
        raise InvalidArgumentError(f"{option} {text!r}: expected {count} numbers, got {len(values)}")
    return values


_KEEP_KIND_HELP = ("Also read images of this kind (phase | derived | localizer | secondary capture), "
                   "skipped by default; repeat.")


@app.command()
def index(
    archive: Path = typer.Argument(..., help="Folder tree of DICOM files (any depth)."),
    out: Path = typer.Option(Path("index.parquet"), "-o", "--out", help="Parquet table to write."),
    workers: Optional[int] = typer.Option(None, help="Processes to use (default: all cores)."),
    iap_config: Optional[Path] = typer.Option(None, help="YAML choosing IAPs / adding header fields."),
    keep_kind: List[str] = typer.Option([], "--keep-kind", help=_KEEP_KIND_HELP),
) -> None:
    """Read the headers of an archive: one row of acquisition parameters per series (volume).

    Python: ``mridomain.data.build_index``.
    """
    from mridomain.data import build_index, print_index_summary
    from mridomain.data.schema import DEFAULT_IAPS, load_iap_config

    _file_out(out, "--out")
    _at_least(workers, "--workers", 1)
    iaps = load_iap_config(iap_config) if iap_config else DEFAULT_IAPS
    result = build_index(archive, out=out, workers=workers, iaps=iaps, keep_kinds=keep_kind)
    print_index_summary(result, out)


@app.command()
def prepare(
    index_path: Path = typer.Argument(..., metavar="INDEX", help="Index parquet from `mridomain index`."),
    out: Path = typer.Option(Path("cache"), "-o", "--out", help="Cache folder to write."),
    slices_per_series: Optional[int] = typer.Option(16, help="Slices sampled per series (0 = all)."),
    size: int = typer.Option(224, help="Output height and width in pixels."),
    normalization: str = typer.Option("max255", help="max255 | percentile | zscore"),
    seed: int = typer.Option(0, help="Seed for slice sampling and the patient split."),
    fractions: str = typer.Option("0.7,0.15,0.15", help="train,val,test fractions (by patient)."),
    annotations: Optional[Path] = typer.Option(None, help="DBC Annotation_Boxes (csv/xlsx) for tumor labels."),
    workers: Optional[int] = typer.Option(None, help="Processes to use (default: all cores)."),
    kspace_view: bool = typer.Option(False, "--kspace-view/--no-kspace-view",
                                     help="Also store each slice's k-space profiles, computed at native "
                                          "resolution (read by the cpu preset's network)."),
) -> None:
    """Sample, resize and normalize slices into a memory-mapped, patient-split training cache.

    Python: ``mridomain.data.prepare_cache``.
    """
    from mridomain.data import prepare_cache

    _folder_out(out, "--out")
    frac = _numbers(fractions, "--fractions", 3)
    _at_least(seed, "--seed", 0)
    _at_least(size, "--size", 1)
    _at_least(slices_per_series, "--slices-per-series", 0)
    _at_least(workers, "--workers", 1)
    cache = prepare_cache(index_path, out, slices_per_series=slices_per_series or None, size=size,
                          normalization=normalization, seed=seed, fractions=frac,
                          annotations=annotations, workers=workers, kspace_view=kspace_view)
    typer.echo(cache.summary())


@app.command()
def simulate(
    out: Path = typer.Option(..., "-o", "--out", help="Folder to write the DICOM dataset into."),
    patients: int = typer.Option(20, help="Number of patients."),
    seed: int = typer.Option(0, help="Random seed (same seed, identical files)."),
    slices: int = typer.Option(16, help="Slices per series."),
    preset: str = typer.Option("dbc", help="Protocol preset name, or a YAML file of protocols."),
    phases: int = typer.Option(1, help="DCE phases per patient (1 = pre-contrast only)."),
    workers: Optional[int] = typer.Option(None, help="Processes to use (default: all cores)."),
    slab: str = typer.Option("spread", help="spread: cover the breasts; tumor: contiguous slices "
                                            "centred on the lesion (e.g. --slices 5 for a 3-D crop)."),
) -> None:
    """Simulate multi-vendor breast MRI and write it as real DICOM in DBC's layout.

    Python: ``mridomain.sim.simulate``.
    """
    from mridomain.sim import simulate as run_simulation

    _folder_out(out, "--out")
    for value, option in ((patients, "--patients"), (slices, "--slices"), (phases, "--phases"), (workers, "--workers")):
        _at_least(value, option, 1)
    _at_least(patients, "--patients", 1, MAX_PATIENTS)
    _at_least(slices, "--slices", 1, MAX_SLICES)
    _at_least(phases, "--phases", 1, 64)
    _at_least(seed, "--seed", 0)
    result = run_simulation(out, n_patients=patients, seed=seed, slices=slices, preset=preset,
                            phases=phases, workers=workers, slab=slab)
    typer.echo(result.summary())


@app.command()
def train(
    cache: Path = typer.Argument(..., help="Slice cache from `mridomain prepare`."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder (checkpoint, config, logs)."),
    preset: str = typer.Option("cpu", help="paper | cpu"),
    epochs: Optional[int] = typer.Option(None, help="Override the preset's epoch count."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint."),
    seed: int = typer.Option(0, help="Random seed."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
) -> None:
    """Train the multi-task IAP network on a slice cache.

    Python: ``mridomain.iap.train`` / ``IAPPredictor.fit``.
    """
    from mridomain.iap import train as run_training

    _folder_out(out, "--out")
    _at_least(epochs, "--epochs", 1)
    _at_least(seed, "--seed", 0)
    result = run_training(cache, out, preset=preset, epochs=epochs, resume=resume, seed=seed, device=device)
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
        _folder_out(out, "--out")
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
    keep_kind: List[str] = typer.Option([], "--keep-kind", help=_KEEP_KIND_HELP),
    header_miss: Optional[str] = typer.Option(None, help=_HEADER_MISS_HELP),
    header_iaps: Optional[str] = typer.Option(None, help=_HEADER_IAPS_HELP),
) -> None:
    """Predict the acquisition parameters of images from their pixels alone.

    Every row says whether the image lies inside the run's training domain, judged on its image and,
    where it has one, its header, and why not (domain_reason). PATHS may be archive
    folders: every series (and every volume of a multi-volume series) in them is predicted.
    Exits with code 1 when nothing could be read.

    Python: ``mridomain.iap.predict_paths``.
    """
    from mridomain.iap import predict_paths

    _file_out(out, "--out")
    if figure is not None:
        _file_out(figure, "--figure")
    _at_least(top_k, "--top-k", 1)
    rule = _domain_rule(run, header_miss, header_iaps)
    result = predict_paths(run, paths, out=out, top_k=top_k, figure=figure, abstain=abstain,
                           combinations=combinations, keep_kinds=keep_kind, rule=rule)
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

    Python: ``mridomain.demo.run_demo``.
    """
    from mridomain.demo import run_demo

    _folder_out(out, "--out")
    for value, option in ((patients, "--patients"), (slices, "--slices"), (epochs, "--epochs")):
        _at_least(value, option, 1)
    _at_least(patients, "--patients", 1, MAX_PATIENTS)
    _at_least(slices, "--slices", 1, MAX_SLICES)
    _at_least(seed, "--seed", 0)
    run_demo(out, patients=patients, seed=seed, slices=slices, epochs=epochs, full=full, reuse=reuse)


@app.command()
def analyze(
    source: Path = typer.Argument(..., metavar="INDEX_OR_CACHE", help="Index parquet or slice cache folder."),
    out: Path = typer.Option(Path("analysis"), "-o", "--out", help="Folder for tables, figures, report.html."),
    split_column: str = typer.Option("split", help="Split column (absent: one split 'all')."),
    html: bool = typer.Option(True, "--html/--no-html", help="Also write the self-contained report.html."),
) -> None:
    """IAP histograms per split, associations between IAPs, combination overlap (Table 3), imbalance.

    Python: ``mridomain.analysis.analyze``.
    """
    from mridomain.analysis import analyze as run_analysis

    _folder_out(out, "--out")
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
) -> None:
    """Send each image to the downstream model of its predicted acquisition domain.

    Python: ``mridomain.analysis.route``.
    """
    from mridomain.analysis import route as run_route
    from mridomain.analysis.routing import parse_model_specs

    _file_out(out, "--out")
    rule = _domain_rule(run, header_miss, header_iaps)
    table = run_route(paths, run, parse_model_specs(model), key_iap=key, default=default,
                      unknown="error" if default else "most_likely", out=out, abstain=abstain, rule=rule)
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

    Python: ``mridomain.analysis.run_routing_experiment``.
    """
    from mridomain.analysis import run_routing_experiment

    _folder_out(out, "--out")
    _at_least(epochs, "--epochs", 1)
    _at_least(seed, "--seed", 0)
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
) -> None:
    """Applicability check: label-free shift of NEW against in-domain data, and predict's verdict per image.

    The verdict uses the run's one threshold and header rule, as predict and route do.

    Python: ``mridomain.analysis.compare``.
    """
    from mridomain.analysis import compare as run_compare

    _folder_out(out, "--out")
    rule = _domain_rule(run, header_miss, header_iaps)
    res = run_compare(train_cache, new, run, out, rule=rule)
    typer.echo(res.to_markdown())
    typer.echo(f"report: {res.files['report']}")


if __name__ == "__main__":  # pragma: no cover
    app()
