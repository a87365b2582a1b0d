"""Command-line interface: parses arguments and calls the library. No logic lives here.

Every command has a Python twin, named in its docstring.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from mridomain.arguments import KEEP_KIND_HELP, MAX_PATIENTS, MAX_SLICES, at_least, file_out, folder_out, numbers
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
from mridomain.iap.cli import app as iap_app  # noqa: E402  (the rooms' apps mount below)

app.add_typer(iap_app)              # no name: IAP commands sit at the top level, as always
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


@app.command()
def index(
    archive: Path = typer.Argument(..., help="Folder tree of DICOM files (any depth)."),
    out: Path = typer.Option(Path("index.parquet"), "-o", "--out", help="Parquet table to write."),
    workers: Optional[int] = typer.Option(None, help="Processes to use (default: all cores)."),
    iap_config: Optional[Path] = typer.Option(None, help="YAML choosing IAPs / adding header fields."),
    keep_kind: List[str] = typer.Option([], "--keep-kind", help=KEEP_KIND_HELP),
) -> None:
    """Read the headers of an archive: one row of acquisition parameters per series (volume).

    Python: ``mridomain.data.build_index``.
    """
    from mridomain.data import build_index, print_index_summary
    from mridomain.data.schema import DEFAULT_IAPS, load_iap_config

    file_out(out, "--out")
    at_least(workers, "--workers", 1)
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
    kspace_sources: str = typer.Option("magnitude,squared_magnitude",
                                       help="With --kspace-view: the images whose spectra are profiled, "
                                            "comma-separated (magnitude, squared_magnitude)."),
) -> None:
    """Sample, resize and normalize slices into a memory-mapped, patient-split training cache.

    Python: ``mridomain.data.prepare_cache``.
    """
    from mridomain.data import prepare_cache

    folder_out(out, "--out")
    frac = numbers(fractions, "--fractions", 3)
    at_least(seed, "--seed", 0)
    at_least(size, "--size", 1)
    at_least(slices_per_series, "--slices-per-series", 0)
    at_least(workers, "--workers", 1)
    view = None
    if kspace_view:
        from mridomain.data.kspace import kspace_view_spec

        view = {"sources": [v.strip() for v in kspace_sources.split(",") if v.strip()]}
        try:
            kspace_view_spec(view, size)             # a bad source is an error before any work
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"--kspace-sources: {err}") from None
    cache = prepare_cache(index_path, out, slices_per_series=slices_per_series or None, size=size,
                          normalization=normalization, seed=seed, fractions=frac,
                          annotations=annotations, workers=workers, kspace_view=view)
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
    anatomies: Optional[int] = typer.Option(None, help="Give the cohort only this many bodies (patient i "
                                            "has patient i mod N's anatomy), to study what anatomical "
                                            "variety costs a model (default: every patient their own)."),
) -> None:
    """Simulate multi-vendor breast MRI and write it as real DICOM in DBC's layout.

    Python: ``mridomain.sim.breast.simulate``.
    """
    from mridomain.sim.breast import simulate as run_simulation

    folder_out(out, "--out")
    for value, option in ((patients, "--patients"), (slices, "--slices"), (phases, "--phases"), (workers, "--workers")):
        at_least(value, option, 1)
    at_least(patients, "--patients", 1, MAX_PATIENTS)
    at_least(slices, "--slices", 1, MAX_SLICES)
    at_least(phases, "--phases", 1, 64)
    at_least(seed, "--seed", 0)
    at_least(anatomies, "--anatomies", 1)
    result = run_simulation(out, n_patients=patients, seed=seed, slices=slices, preset=preset,
                            phases=phases, workers=workers, slab=slab, anatomies=anatomies)
    typer.echo(result.summary())


if __name__ == "__main__":  # pragma: no cover
    app()
