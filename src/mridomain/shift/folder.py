"""An opened study folder: the one place that reads ``study.json`` (see :mod:`mridomain.shift.study`
for the folder's layout). The study runner and the report both open folders through it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mridomain.errors import SchemaMismatchError
from mridomain.shift.config import ShiftConfig
from mridomain.shift.data import StudyData, dataset_folder
from mridomain.shift.runner import ResultsStore, RunContext

__all__ = ["Study", "open_study", "STUDY_FORMAT", "STUDY_VERSION"]

STUDY_FORMAT = "mridomain.shift.study"
STUDY_VERSION = 1


@dataclass
class Study:
    """An opened study folder (see the module docstring)."""

    out: Path
    config: ShiftConfig
    domains: dict[str, tuple[str, str]]
    fractions: tuple[float, float, float]
    stratify: bool
    meta: dict[str, Any] = field(default_factory=dict)
    #: the user model (package.module:callable) named on this invocation, if any: the only one
    #: outside the registry that runs (study.json alone never chooses code to import)
    trusted_model: str | None = None

    def check_model(self) -> None:
        """One-line error when study.json names a user model the caller did not repeat."""
        from mridomain.shift.models import check_model_source

        check_model_source(self.config.model, self.trusted_model, str(self.out / "study.json"))

    @property
    def store(self) -> ResultsStore:
        """The folder's run records (``runs.jsonl``)."""
        return ResultsStore(self.out / "runs.jsonl")

    def data(self, dataset: str) -> StudyData:
        """The samples of ``dataset`` as read into the folder (memory-mapped)."""
        return StudyData.load(dataset_folder(self.out, dataset))

    @property
    def preset(self) -> str | None:
        """The preset the config was made from (``paper`` / ``cpu``; None for a study of an older
        version or a config given without one)."""
        return self.meta.get("preset")

    def settings_line(self) -> str:
        """Preset, model settings and split in one line (printed by every run, stated in the report)."""
        c = self.config
        return (f"preset {self.preset or 'not recorded'} ({c.model}, width {c.width:g}, {c.epochs} epochs, "
                f"batch {c.batch_size}, lr {c.lr:g}); split {self.split_name}")

    @property
    def split_name(self) -> str:
        """How each domain was split: the words the report and the console use."""
        return "stratified by label within each domain" if self.stratify else "random within each domain (the paper's)"

    def context(self, keep_models: Sequence[str] = ("main",)) -> RunContext:
        """What every run of this study shares, picklable for worker processes (models of the
        experiments in ``keep_models`` are kept under ``models/``)."""
        return RunContext(data={ds: str(dataset_folder(self.out, ds)) for ds in self.domains},
                          config=self.config.to_dict(), fractions=self.fractions, stratify=self.stratify,
                          models_dir=str(self.out / "models"), keep_models=tuple(keep_models), preset=self.preset)


def open_study(out: str | Path, model: str | None = None) -> Study:
    """Open an existing study folder (one-line errors when it is not one).

    ``model``: the user model (``package.module:callable``) you trust this folder to run; a study
    whose config names another model outside the registry is refused before it trains.
    """
    from mridomain.files import read_versioned_json

    out = Path(out)
    meta = read_versioned_json(out / "study.json", STUDY_VERSION, expect=STUDY_FORMAT)
    config = ShiftConfig.from_dict(meta.get("config"), where=str(out / "study.json"))
    try:
        domains = {str(k): (str(v[0]), str(v[1])) for k, v in meta["domains"].items()}
        fractions = tuple(float(f) for f in meta["fractions"])
        stratify = meta["stratify"]
        if len(fractions) != 3 or not isinstance(stratify, bool):
            raise ValueError("bad fractions or stratify")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise SchemaMismatchError(f"{out / 'study.json'}: damaged study description ({type(err).__name__}: "
                                  f"{err})") from None
    return Study(out, config, domains, fractions, stratify, meta, trusted_model=model)
