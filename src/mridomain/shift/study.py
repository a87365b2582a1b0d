"""The study folder: prepare it once from a manifest, run experiments into it, resume, re-render.

```
OUT/study.json          what every run depends on: manifest fingerprint, domains, split fractions,
                        the model config (a folder holds one study; another config is refused)
OUT/data/<dataset>/     images.npy + samples.parquet (the samples, read once), skipped.csv
OUT/splits.csv          dataset, seed, domain, patient_id, split: every split any run used
OUT/runs.jsonl          one record per finished run (appended as it finishes)
OUT/models/             the main experiment's models (for attribution), when kept
OUT/runs.csv, curves.csv, table2.csv, delta.csv, mixing.csv, noise.csv, attribution.csv,
OUT/fig*.png, report.html   written by mridomain.shift.report.render_report
```
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import sys

import pandas as pd

from mridomain.errors import InvalidArgumentError, MridomainError, SchemaMismatchError
from mridomain.shift.config import ShiftConfig, default_preset, make_config
from mridomain.shift.data import dataset_folder, load_samples
from mridomain.shift.manifest import choose_domains, manifest_digest, read_manifest, validate_manifest
from mridomain.shift.protocol import (MIXING_FRACTIONS, NOISE_ALPHAS, PAPER_FRACTIONS, check_splits, plan_runs,
                                      study_splits)
from mridomain.shift.folder import STUDY_FORMAT, STUDY_VERSION, Study, open_study
from mridomain.shift.runner import execute_runs

__all__ = ["Study", "ExperimentResult", "RunsFailedError", "open_study", "prepare_study", "run_experiment",
           "run_study", "run_mixing", "run_noise", "seed_list", "STUDY_FORMAT"]

#: config fields that may differ between calls on one study folder (they do not change results)
_FREE_FIELDS = ("seed", "device", "devices", "num_nodes", "strategy")


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``10`` -> seeds 0..9; a list is used as given.

    >>> seed_list(3), seed_list([4, 7])
    ([0, 1, 2], [4, 7])
    """
    if isinstance(seeds, int):
        if seeds < 1:
            raise InvalidArgumentError(f"seeds {seeds}: need at least one")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or any(s < 0 for s in out):
        raise InvalidArgumentError(f"seeds {seeds!r}: need one or more non-negative seeds")
    return out


def _comparable(config: ShiftConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _FREE_FIELDS}


def prepare_study(manifest: str | Path | pd.DataFrame, out: str | Path, config: ShiftConfig | None = None,
                  domains: Sequence[str] | None = None, fractions: Sequence[float] = PAPER_FRACTIONS,
                  stratify: bool | None = None, workers: int | None = None, progress: bool = True,
                  preset: str | None = None) -> Study:
    """Validate the manifest, read its samples once into ``OUT/data`` and write ``study.json``.

    Re-opening a folder with the same manifest and settings reuses what is there (a resumed
    study); different ones are a one-line :class:`SchemaMismatchError` naming what differs.
    ``config=None`` takes the folder's config when there is one, else the :func:`default_preset`
    (``paper`` with CUDA, else ``cpu``); ``preset`` names the preset ``config`` was made from (it
    is recorded in ``study.json`` and every run record). ``stratify=None`` takes the folder's
    split when there is one, else the paper's random split within each domain.
    """
    from mridomain.files import dump_json, remove_stale_temporaries

    out = Path(out)
    remove_stale_temporaries(out)                        # what a killed earlier call left half-written
    if isinstance(manifest, pd.DataFrame):
        table, where = validate_manifest(manifest, where="<manifest>"), "<manifest>"
    else:
        table, where = read_manifest(manifest), str(manifest)
    table, chosen, dropped = choose_domains(table, domains, where=where)
    digest = manifest_digest(table)
    existing = open_study(out) if (out / "study.json").exists() else None
    explicit = config is not None
    if config is None:
        if existing is not None:
            config, preset = existing.config, preset or existing.preset
        else:
            preset = preset or default_preset()
            config = make_config(preset)
    if stratify is None:
        stratify = existing.stratify if existing is not None else False
    fr = tuple(float(f) for f in fractions)
    if existing is not None:
        diffs = []
        if existing.meta.get("manifest_digest") != digest:
            diffs.append("manifest")
        if existing.domains != chosen:
            diffs.append("domains")
        if tuple(existing.fractions) != fr or existing.stratify != stratify:
            diffs.append("split fractions")
        old, new = _comparable(existing.config), _comparable(config)
        diffs += [f"config {k} ({old.get(k)!r} -> {new.get(k)!r})" for k in sorted(set(old) | set(new))
                  if old.get(k) != new.get(k)]
        if diffs:
            raise SchemaMismatchError(f"{out}: holds a study of another {', '.join(diffs)}; use another output "
                                      "folder (or delete this one) to start a new study")
    ready = all((dataset_folder(out, ds) / "images.npy").exists() for ds in chosen)
    if existing is None or not ready:
        datas, skipped = load_samples(table, config.image_size, workers=workers, progress=progress)
        for d in datas:
            d.save(dataset_folder(out, d.dataset))
            bad = skipped[skipped["dataset"] == d.dataset]
            if len(bad):
                bad.to_csv(dataset_folder(out, d.dataset) / "skipped.csv", index=False)
        if len(dropped):
            dropped.to_csv(out / "dropped.csv", index=False)
    meta = {"format": STUDY_FORMAT, "version": STUDY_VERSION, "manifest": where, "manifest_digest": digest,
            "n_samples": int(len(table)), "domains": {k: list(v) for k, v in chosen.items()}, "fractions": list(fr),
            "stratify": bool(stratify), "preset": preset, "config": config.to_dict()}
    if existing is None:
        dump_json(meta, out / "study.json")
    study = open_study(out) if existing is None else existing
    study.config = config
    if explicit:        # a config object the caller passed is theirs: its model may run
        study.trusted_model = config.model
    if preset is not None:
        study.meta["preset"] = preset
    return study


class RunsFailedError(MridomainError):
    """Every run an experiment started failed (each failure is kept in runs.jsonl)."""


@dataclass
class ExperimentResult:
    """What one :func:`run_experiment` call did."""

    study: Study
    experiment: str
    planned: int
    resumed: int
    records: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The records of this call's runs that failed."""
        return [r for r in self.records if r.get("status") != "ok"]

    def raise_if_all_failed(self) -> None:
        """A :class:`RunsFailedError` when this call ran runs and every one of them failed (a
        command that produced only failures must not exit 0)."""
        if self.records and len(self.failed) == len(self.records):
            first = self.failed[0]
            raise RunsFailedError(f"{self.study.out}: all {len(self.records)} {self.experiment} runs failed; "
                                  f"first: {first['run_id']}: {first.get('error')}")

    def summary(self) -> str:
        """One line of counts and the study's settings, then up to ten failed runs with their errors."""
        ran = len(self.records)
        line = (f"{self.experiment}: {self.planned} runs planned, {self.resumed} already finished, {ran} run now"
                f" ({len(self.failed)} failed); {self.study.settings_line()}")
        for r in self.failed[:10]:
            line += f"\n  failed {r['run_id']}: {r.get('error')}"
        return line


def _read_splits(path: Path) -> pd.DataFrame:
    """``splits.csv``, or a one-line error naming it when it is damaged (empty, not UTF-8, columns)."""
    try:
        table = pd.read_csv(path, dtype={"patient_id": str, "domain": str, "dataset": str}, encoding="utf-8")
    except (ValueError, OSError) as err:       # EmptyDataError, UnicodeDecodeError, ParserError
        raise SchemaMismatchError(f"{path}: damaged ({type(err).__name__}: {' '.join(str(err).split())[:120]}); "
                                  "delete it: the splits follow from the seeds and are written again") from None
    missing = [c for c in ("dataset", "seed", "domain", "patient_id", "split") if c not in table.columns]
    if missing:
        raise SchemaMismatchError(f"{path}: damaged (no column {', '.join(missing)}); delete it: the splits follow "
                                  "from the seeds and are written again")
    return table


def _write_splits(study: Study, seeds: Sequence[int]) -> None:
    """Append the splits of new seeds to ``splits.csv`` (the split each run's record refers to)."""
    path = study.out / "splits.csv"
    old = _read_splits(path) if path.exists() else None
    frames = [old] if old is not None else []
    for ds in study.domains:
        data = study.data(ds)
        have = set(old.loc[old["dataset"] == ds, "seed"]) if old is not None else set()
        for seed in seeds:
            if seed in have:
                continue
            splits = study_splits(data.table, ds, seed, study.fractions, study.stratify)
            frames.append(pd.DataFrame({"dataset": ds, "seed": seed, "domain": data.table["domain"],
                                        "patient_id": data.table["patient_id"], "split": splits}).drop_duplicates())
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(path, index=False)


def run_experiment(study: Study, experiment: str, seeds: int | Sequence[int], settings: Sequence[float] | None = None,
                   workers: int | None = None, backend: str = "process", ray_address: str | None = None,
                   progress: bool = True, keep_models: Sequence[str] = ("main",),
                   on_result: Callable[[dict[str, Any]], None] | None = None) -> ExperimentResult:
    """Run every not yet finished run of ``experiment`` (main | mixing | noise) over ``seeds``.

    Before anything trains, every split of every seed is checked for both labels (one-line
    :class:`ManifestError` otherwise). Finished runs in ``OUT/runs.jsonl`` are skipped.
    """
    seeds = seed_list(seeds)
    study.check_model()
    for ds in study.domains:
        check_splits(study.data(ds).table, ds, seeds, study.fractions, study.stratify, where=str(study.meta.get("manifest")))
    _write_splits(study, seeds)
    plan = plan_runs(experiment, study.domains, seeds, settings)
    done = study.store.finished()
    todo = [s for s in plan if s.run_id not in done]
    records = list(execute_runs(todo, study.context(keep_models), study.store, workers=workers, backend=backend,
                                ray_address=ray_address, progress=progress, on_result=on_result))
    return ExperimentResult(study, experiment, len(plan), len(plan) - len(todo), records)


def _check_arguments(experiment: str, settings: Sequence[float] | None, model: str | None, workers: int | None,
                     backend: str, device: str | None) -> None:
    """Every argument checked before any sample is read or any run trains (one-line errors)."""
    from mridomain.errors import check_choice, check_range
    from mridomain.shift.protocol import check_settings
    from mridomain.shift.runner import BACKENDS

    check_settings(experiment, settings)
    check_range(workers, "workers", 1)
    check_choice(backend, "backend", BACKENDS)
    if model is not None:
        from mridomain.shift.models import resolve_model_name

        resolve_model_name(model, (64, 64))          # a name the registry knows, or package.module:callable
    if device is not None:
        from mridomain.engine.engine import resolve_device

        resolve_device(device)


def _run(experiment: str, manifest: str | Path | pd.DataFrame, out: str | Path, seeds: int | Sequence[int],
         settings: Sequence[float] | None, preset: str | None, model: str | None, domains: Sequence[str] | None,
         workers: int | None, backend: str, ray_address: str | None, progress: bool, report: bool,
         stratify: bool | None, overrides: dict[str, Any]) -> ExperimentResult:
    _check_arguments(experiment, settings, model, workers, backend, overrides.get("device"))
    from mridomain.files import check_output_folder

    check_output_folder(out, "study folder")
    changes = {k: v for k, v in {"model": model, **overrides}.items() if v is not None}
    existing = open_study(out, model=model) if (Path(out) / "study.json").exists() else None
    config = None
    if preset is not None:
        config = make_config(preset, **changes)
    elif existing is not None:   # the folder's config (and preset), with the changes on top
        existing.check_model()       # the folder's model stays: it must be one the user named
        preset = existing.preset
        config = existing.config.updated(**changes) if changes else None
    else:
        preset = default_preset()
        config = make_config(preset, **changes)
    study = prepare_study(manifest, out, config, domains=domains, workers=workers, progress=progress,
                          stratify=stratify, preset=preset)
    if progress:
        print(f"{experiment}: {study.settings_line()}", file=sys.stderr, flush=True)
    result = run_experiment(study, experiment, seeds, settings, workers=workers, backend=backend,
                            ray_address=ray_address, progress=progress)
    if report:
        from mridomain.shift.report import render_report

        render_report(study.out)
    return result


def run_study(manifest: str | Path | pd.DataFrame, out: str | Path, seeds: int | Sequence[int] = 10,
              preset: str | None = None, model: str | None = None, domains: Sequence[str] | None = None,
              workers: int | None = None, backend: str = "process", ray_address: str | None = None,
              progress: bool = True, report: bool = True, stratify: bool | None = None,
              **overrides: Any) -> ExperimentResult:
    """The paper's main experiment (Table 2, Delta) on a manifest, into the study folder ``out``.

    ``preset``: ``paper`` or ``cpu`` (default: the folder's config, else ``paper`` when CUDA is
    available and ``cpu`` otherwise; printed and recorded in every run); ``stratify``: split each
    domain stratified by label (default: the folder's, else the paper's random split); ``model``: auto,
    mrnet2d, nodulex, densenet121 or ``package.module:callable``; ``overrides``: any
    :class:`ShiftConfig` field (epochs, lr, batch_size, width, image_size, device, ...).
    Interrupted or repeated calls resume: finished runs are not trained again.
    """
    return _run("main", manifest, out, seeds, None, preset, model, domains, workers, backend, ray_address,
                progress, report, stratify, overrides)


def run_mixing(manifest: str | Path | pd.DataFrame, out: str | Path, fractions: Sequence[float] = MIXING_FRACTIONS,
               seeds: int | Sequence[int] = 3, preset: str | None = None, model: str | None = None,
               domains: Sequence[str] | None = None, workers: int | None = None, backend: str = "process",
               ray_address: str | None = None, progress: bool = True, report: bool = True,
               stratify: bool | None = None, **overrides: Any) -> ExperimentResult:
    """Appendix A.1: target-domain mixing at fractions f (3 seeds by default, as the paper); f = 0
    is the main experiment's run of the same seed."""
    return _run("mixing", manifest, out, seeds, fractions, preset, model, domains, workers, backend, ray_address,
                progress, report, stratify, overrides)


def run_noise(manifest: str | Path | pd.DataFrame, out: str | Path, alphas: Sequence[float] = NOISE_ALPHAS,
              seeds: int | Sequence[int] = 3, preset: str | None = None, model: str | None = None,
              domains: Sequence[str] | None = None, workers: int | None = None, backend: str = "process",
              ray_address: str | None = None, progress: bool = True, report: bool = True,
              stratify: bool | None = None, **overrides: Any) -> ExperimentResult:
    """Appendix A.2: Gaussian noise of standard deviation alpha added to the training images, in
    their stored intensity units (the report also gives alpha relative to the images' own spread)."""
    return _run("noise", manifest, out, seeds, alphas, preset, model, domains, workers, backend, ray_address,
                progress, report, stratify, overrides)
