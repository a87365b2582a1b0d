"""Run many independent trainings: one run = train M_j on one training set, test on Test_1 and Test_2.

Each finished run is appended to ``runs.jsonl`` at once (one JSON object per line, flushed and
fsynced), so a study killed at any moment keeps every run it finished, and the next call skips
them. Runs execute in the local process pool (:func:`mridomain.parallel.parallel_map`, one thread
per worker) or, with ``backend="ray"``, as Ray tasks on a cluster (``pip install
mridomain[distributed]``). A run that fails is recorded with its error and retried next time; the
rest of the study goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from mridomain.errors import InvalidArgumentError, MridomainError
from mridomain.shift.config import ShiftConfig
from mridomain.shift.data import StudyData
from mridomain.shift.protocol import PAPER_FRACTIONS, RunSpec, add_noise, mixing_indices, study_splits
from mridomain.shift.stats import auc

__all__ = ["RunContext", "ResultsStore", "train_and_test", "execute_run", "execute_runs", "results_table",
           "curves_table", "BACKENDS"]

BACKENDS = ("process", "ray")
RECORD_VERSION = 1


@dataclass(frozen=True)
class RunContext:
    """What every run of a study shares (picklable: it travels to worker processes)."""

    data: dict[str, str]                 # dataset -> folder of StudyData
    config: dict[str, Any]               # ShiftConfig fields (the seed is set per run)
    fractions: tuple[float, float, float] = PAPER_FRACTIONS
    stratify: bool = False
    models_dir: str | None = None        # keep each run's model (and engine run folder) here
    keep_models: Sequence[str] = ()      # experiments whose models are kept (main: for attribution)
    preset: str | None = None            # the preset the config came from (recorded in every run)


_DATA_CACHE: dict[str, StudyData] = {}


def _study_data(folder: str) -> StudyData:
    """One memory-mapped StudyData per folder and process (loky workers are reused across runs)."""
    if folder not in _DATA_CACHE:
        _DATA_CACHE[folder] = StudyData.load(folder)
    return _DATA_CACHE[folder]


def split_digest(table: pd.DataFrame, splits: np.ndarray) -> str:
    """Fingerprint of a patient split (which patient went where) for the results table."""
    pairs = sorted({(str(p), str(s)) for p, s in zip(table["patient_id"], splits)})
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:12]


def model_folder(models_dir: str | Path, spec: RunSpec) -> Path:
    """Where a kept model of a run lives: ``<models_dir>/<run id with / as __>``."""
    return Path(models_dir) / spec.run_id.replace("/", "__").replace("=", "-")


def train_and_test(spec: RunSpec, data: StudyData, config: ShiftConfig, fractions: Sequence[float] = PAPER_FRACTIONS,
                   stratify: bool = False, out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Train M_{train_domain} for ``spec`` and return its results record (AUC on both test sets).

    ``out`` keeps the model and the engine's run folder there (else nothing is written).
    """
    from mridomain.shift.classifier import ShiftClassifier

    t0 = time.perf_counter()
    table = data.table
    splits = study_splits(table, spec.dataset, spec.seed, fractions, stratify)
    domain = table["domain"].to_numpy()
    labels = table["label"].to_numpy().astype(np.int64)

    def part(dom: str, name: str) -> np.ndarray:
        return np.flatnonzero((domain == dom) & (splits == name))

    train = part(spec.train_domain, "train")
    n_source, n_duplicates = len(train), 0
    if spec.experiment == "mixing":
        train, n_duplicates = mixing_indices(train, part(spec.other_domain, "train"), float(spec.setting), spec.seed,
                                             key=(spec.dataset, spec.train_domain))
    x_train = np.asarray(data.images[train], dtype=np.float32)
    if spec.experiment == "noise":
        x_train = add_noise(x_train, float(spec.setting), spec.seed, key=(spec.dataset, spec.train_domain))
    val = part(spec.train_domain, "val")
    cfg = ShiftConfig.from_dict({**config.to_dict(), "seed": spec.seed}, where="run config")
    model = ShiftClassifier(cfg, data.sample_shape, data.modality)
    run_dir = Path(out) / "engine" if out is not None else None
    model.fit(x_train, labels[train], np.asarray(data.images[val]), labels[val], out=run_dir, progress=progress)
    if out is not None:
        model.save(out)
    tests = {}
    for dom in (spec.train_domain, spec.other_domain):
        idx = part(dom, "test")
        scores = model.decision_function(np.asarray(data.images[idx]))
        pids = table["patient_id"].to_numpy()[idx]
        tests[dom] = {"auc": auc(labels[idx], scores), "n": int(len(idx)), "n_positive": int(labels[idx].sum()),
                      "n_patients": int(len(set(pids.tolist()))),
                      "n_positive_patients": int(len(set(pids[labels[idx] == 1].tolist()))),
                      "sample_id": table["sample_id"].to_numpy()[idx].astype(int).tolist(),
                      "score": [round(float(s), 6) for s in scores]}
    curve = [{k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v) for k, v in row.items()}
             for row in model.history]
    return {**spec.to_dict(), "status": "ok", "error": None, "version": RECORD_VERSION,
            "tests": tests, "n_train": int(len(train)), "n_train_source": int(n_source),
            "n_train_target": int(len(train) - n_source), "n_duplicates": int(n_duplicates),
            "n_train_positive": int(labels[train].sum()), "n_val": int(len(val)),
            "split_digest": split_digest(table, splits), "best_epoch": int(model.best_epoch),
            "best_val_auc": float(max((r.get("val_auc", float("nan")) for r in curve), default=float("nan"))),
            "epochs_run": len(curve), "curve": curve, "seconds": round(time.perf_counter() - t0, 3),
            "model": str(out) if out is not None else None, "host": socket.gethostname(), "pid": os.getpid(),
            "finished_at": time.time()}


def execute_run(job: tuple[RunSpec, RunContext], data: StudyData | None = None) -> dict[str, Any]:
    """Worker entry point: one run, never raising (a failure becomes a ``status: failed`` record)."""
    spec, ctx = job
    t0 = time.perf_counter()
    try:
        data = data if data is not None else _study_data(ctx.data[spec.dataset])
        out = model_folder(ctx.models_dir, spec) if ctx.models_dir and spec.experiment in ctx.keep_models else None
        config = ShiftConfig.from_dict(ctx.config, where="study config")
        record = train_and_test(spec, data, config, ctx.fractions, ctx.stratify, out=out)
        return {**record, "preset": ctx.preset, "stratify": bool(ctx.stratify)}
    except Exception as err:  # noqa: BLE001 - recorded with its message and traceback, shown in the report
        reason = f"{type(err).__name__}: {err}" if not isinstance(err, MridomainError) else str(err)
        return {**spec.to_dict(), "status": "failed", "error": reason.splitlines()[0] if reason else type(err).__name__,
                "traceback": traceback.format_exc(limit=6), "version": RECORD_VERSION, "tests": {},
                "seconds": round(time.perf_counter() - t0, 3), "host": socket.gethostname(), "pid": os.getpid(),
                "finished_at": time.time()}


class ResultsStore:
    """Append-only results of a study (``runs.jsonl``): one JSON object per finished run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Append one run's record as a line of its own, flushed and fsynced (a line cut short by a
        killed writer before it is ended first, so it cannot swallow this record)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, default=float, allow_nan=True)
        with open(self.path, "a+b") as fh:
            # a process killed mid-write leaves a line without its newline: end it, so this record
            # starts a line of its own (the cut one is skipped when read)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write((line + "\n").encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, the latest per run id (a run retried after a failure replaces it).
        A line cut short by a kill is ignored."""
        if not self.path.exists():
            return []
        import warnings

        latest: dict[str, dict[str, Any]] = {}
        damaged = []
        with open(self.path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    damaged.append(number)       # torn by a kill, or a damaged byte: that run reruns
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("run_id"), str):
                    latest[rec["run_id"]] = rec
                else:
                    damaged.append(number)
        if damaged:
            warnings.warn(f"{self.path}: skipped {len(damaged)} damaged line(s) (line {damaged[0]}"
                          f"{', ...' if len(damaged) > 1 else ''}); their runs count as not finished", stacklevel=2)
        return list(latest.values())

    def finished(self) -> set[str]:
        """Run ids whose latest record succeeded."""
        return {r["run_id"] for r in self.records() if r.get("status") == "ok"}


def results_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The long results table: one row per (run, test domain) (failed runs: one row, auc NaN)."""
    rows = []
    base_keys = ("run_id", "experiment", "dataset", "seed", "train_domain", "other_domain", "setting", "status")
    for r in records:
        base = {k: r.get(k) for k in base_keys}
        extra = {k: r.get(k) for k in ("n_train", "n_train_target", "n_duplicates", "n_val", "best_epoch",
                                       "best_val_auc", "epochs_run", "split_digest", "seconds", "error")}
        tests = r.get("tests") or {}
        if not tests:
            rows.append({**base, "test_domain": None, "auc": float("nan"), "n_test": 0, "n_test_positive": 0, **extra})
        for dom, t in tests.items():
            rows.append({**base, "test_domain": dom, "auc": float(t["auc"]), "n_test": t["n"],
                         "n_test_positive": t["n_positive"], "n_test_patients": t.get("n_patients"),
                         "n_test_positive_patients": t.get("n_positive_patients"), **extra})
    cols = [*base_keys, "test_domain", "auc", "n_test", "n_test_positive", "n_test_patients",
            "n_test_positive_patients", "n_train", "n_train_target",
            "n_duplicates", "n_val", "best_epoch", "best_val_auc", "epochs_run", "split_digest", "seconds", "error"]
    df = pd.DataFrame(rows, columns=cols)
    if len(df):
        df["setting"] = pd.to_numeric(df["setting"], errors="coerce")
        df = df.sort_values(["experiment", "dataset", "train_domain", "setting", "seed", "test_domain"],
                            na_position="first", kind="stable").reset_index(drop=True)
    return df


def curves_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Training curves of every run: run_id, epoch, train_loss, val_auc, val_loss, ..."""
    rows = [{"run_id": r["run_id"], **row} for r in records for row in (r.get("curve") or [])]
    return pd.DataFrame(rows)


def execute_runs(specs: Sequence[RunSpec], ctx: RunContext, store: ResultsStore, workers: int | None = None,
                 backend: str = "process", ray_address: str | None = None, progress: bool = True,
                 on_result: Callable[[dict[str, Any]], None] | None = None) -> Iterator[dict[str, Any]]:
    """Run ``specs`` and append each record to ``store`` the moment it arrives; yields the records.

    ``backend="process"``: the local process pool (``workers`` processes, one thread each; one
    worker runs in this process with torch's default threads). ``backend="ray"``: Ray tasks on the
    cluster at ``ray_address`` (None: a running cluster found by Ray, else a local instance).
    """
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend {backend!r}: choose {' or '.join(BACKENDS)}")
    if not specs:
        return
    if backend == "ray":
        results: Iterable[dict[str, Any]] = _ray_results(specs, ctx, ray_address, workers, progress)
    else:
        from mridomain.parallel import parallel_map

        results = parallel_map(execute_run, [(s, ctx) for s in specs], workers=workers, total=len(specs),
                               batch_size=1, progress=progress, desc="runs", unit="run")
    for rec in results:
        store.append(rec)
        if on_result is not None:
            on_result(rec)
        yield rec


def _ray_results(specs: Sequence[RunSpec], ctx: RunContext, address: str | None, workers: int | None,
                 progress: bool) -> Iterator[dict[str, Any]]:
    """Ray tasks, one per run; the study data travel through Ray's object store (no shared disk
    needed except for kept models)."""
    try:
        import ray
    except ImportError:
        raise InvalidArgumentError("backend 'ray' needs Ray: pip install 'mridomain[distributed]'") from None
    from mridomain.progress import progress_bar

    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        elif workers:
            kwargs["num_cpus"] = int(workers)
        ray.init(**kwargs)
        started_here = True
    try:
        remote = ray.remote(num_cpus=1)(_ray_run)
        refs = {name: ray.put(StudyData.load(folder, mmap=False)) for name, folder in ctx.data.items()
                if any(s.dataset == name for s in specs)}
        pending = [remote.remote((s, ctx), refs[s.dataset]) for s in specs]
        with progress_bar(total=len(pending), desc="runs (ray)", unit="run", enabled=progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield ray.get(ref)
                    bar.update(1)
    finally:
        if started_here:
            ray.shutdown()


def _ray_run(job: tuple[RunSpec, RunContext], data: StudyData) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)   # one CPU per task, as Ray schedules them
    return execute_run(job, data)
