"""Which acquisition factor causes the drop? Re-image the target test patients with one factor switched.

Beyond the paper (its Discussion hypothesises that "differences in scanner parameters and
post-processing" cause the drop): on a simulated archive the same phantoms can be imaged again.
For model M_j (trained on domain j) and each patient t of the target domain's test set, a source
partner s (a patient of domain j, drawn once per t) lends its protocol, and t is re-imaged:

- ``acquired``: with its own protocol (reproduces the archive's pixels, so its AUC is R_{j,k});
- one condition per factor of :data:`mridomain.sim.FACTORS` (vendor reconstruction and filters,
  coil, field strength, TR/TE/flip, matrix/FOV/thickness, fat suppression, agent, position):
  t's protocol with that factor's fields taken from s's;
- ``all``: every listed factor switched (the patient imaged as the source domain would).

Each condition's crop is cut around the tumor box of its own image, as an annotator would, and
scored by M_j. Per factor the table gives AUC, its change from ``acquired``, and the fraction of
the Table-2 drop (in-domain minus out-of-domain AUC, paired per seed) it recovers. Everything
else (anatomy, lesion, noise stream, FOV draw) stays the patient's own, by the simulator's design.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError
from mridomain.shift.data import crop_volume
from mridomain.shift.protocol import stable_seed, study_splits


__all__ = ["PIXEL_FACTORS", "AttributionResult", "archive_protocols", "run_attribution", "attribution_summary"]

#: the acquisition factors of mridomain.sim.FACTORS the study switches by default (the issue's list:
#: vendor reconstruction and filters, coil, field strength, TR/TE/flip, matrix and FOV, fat
#: suppression, agent); "position" (HFP/FFP mirroring) and "header" (text only) can be added
PIXEL_FACTORS = ("recon", "coil", "field_strength", "timing", "matrix", "fat_suppression", "contrast_agent")


def _patient_index(pid: str) -> int:
    try:
        return int(str(pid).rsplit("_", 1)[-1]) - 1
    except ValueError:
        raise SchemaMismatchError(f"patient id {pid!r}: not a simulated Breast_MRI_NNN id") from None


def archive_protocols(archive: str | Path, sim_seed: int, preset: str | Path = "dbc") -> dict[str, Any]:
    """The Protocol of every patient of a simulated archive, drawn again as ``simulate`` drew them
    (phantoms of ``(seed, i)``, protocols from ``rng([seed, 99])``), and checked against the
    archive's manifest: a one-line :class:`SchemaMismatchError` when the seed or preset differ."""
    from mridomain.sim.breast import load_preset
    from mridomain.sim.breast.simulate import draw_cohort

    path = Path(archive) / "manifest.parquet"
    if not path.exists():
        raise EmptyInputError(Path(archive), "no manifest.parquet (not an archive written by mridomain simulate)")
    sim = pd.read_parquet(path)
    first = sim.drop_duplicates("patient_id")
    n = max(_patient_index(p) for p in first["patient_id"]) + 1
    cohort = str(sim["cohort"].iloc[0]) if "cohort" in sim.columns else "population"
    phantoms, protocols, _ = draw_cohort(sim_seed, n, load_preset(preset), cohort)
    out = {}
    for row in first.itertuples(index=False):
        i = _patient_index(row.patient_id)
        iaps = protocols[i].iaps()
        for key in ("manufacturer", "scanner_model", "acquisition_matrix", "fov", "tr", "te"):
            if str(iaps[key]) != str(getattr(row, key)):
                raise SchemaMismatchError(f"{path}: patient {row.patient_id} has {key} {getattr(row, key)!r}, seed "
                                          f"{sim_seed} with preset {preset} gives {iaps[key]!r}: pass the archive's "
                                          "simulation seed and preset")
        out[str(row.patient_id)] = (phantoms[i], protocols[i])
    return out


def _acts(factor: str, phase: int) -> bool:
    """Whether a factor can change the pixels of this DCE phase: the agent acts only after its
    injection (mridomain.sim.FACTORS: "post-contrast phases only"; asserted by the simulator's
    tests), and header fields never do."""
    return not ((factor == "contrast_agent" and phase == 0) or factor == "header")


def _crops_of(series: Any, crop: tuple[int, int, int], sites: list[tuple[int, str]]) -> dict[int, np.ndarray]:
    """The crops of one patient's samples, each cut around the tumor box of the re-imaged series as
    an annotator would (``contralateral`` samples: the same box mirrored to the other breast,
    columns ``w - 1 - x``)."""
    s0, s1, r0, r1, c0, c1 = series.tumor_box
    width = series.volume.shape[2]
    out = {}
    for index, site in sites:
        x = (c0 + c1) / 2
        if site == "contralateral":
            x = width - 1 - x
        out[index] = crop_volume(series.volume, ((s0 + s1) / 2, (r0 + r1) / 2, x), crop)
    return out


def _reimage_patient(task: tuple) -> list[tuple[str, Any, dict[int, np.ndarray] | None, str | None]]:
    """Worker: one patient under each of its conditions -> per condition the crops of its samples
    (:func:`_crops_of`) or why there are none. The conditions share one ``renders`` dict
    (:func:`mridomain.sim.acquire_series`): a factor that leaves the geometry alone reuses the
    patient's rendered anatomy, with identical pixels."""
    from mridomain.sim.breast import acquire_series

    pid, phantom, jobs, slices, slab, phase, crop, sites = task
    renders: dict = {}
    out = []
    for key, protocol in jobs:
        try:
            series = acquire_series(phantom, protocol, slices=slices, slab=slab, phase=phase, renders=renders)
        except Exception as err:  # noqa: BLE001 - recorded per patient and condition
            out.append((pid, key, None, f"{type(err).__name__}: {err}"))
            continue
        if series.tumor_box is None:
            out.append((pid, key, None, "no tumor box in the re-imaged series"))
        else:
            out.append((pid, key, _crops_of(series, crop, sites), None))
    return out


def _reimage(task: tuple) -> tuple[str, Any, dict[int, np.ndarray] | None, str | None]:
    """Worker: one patient under one condition, ``(pid, key, phantom, protocol, slices, slab,
    phase, crop, sites)`` -> ``(pid, key, crops or None, why not)`` (see :func:`_reimage_patient`)."""
    pid, key, phantom, protocol, slices, slab, phase, crop, sites = task
    return _reimage_patient((pid, phantom, [(key, protocol)], slices, slab, phase, crop, sites))[0]


def _sites(table: pd.DataFrame) -> dict[str, list[tuple[int, str]]]:
    """Per patient: (row index, crop site) of its samples (site ``lesion`` unless the manifest's
    ``crop_site`` column says ``contralateral``)."""
    site = table["crop_site"].astype(str) if "crop_site" in table.columns else pd.Series("lesion", index=table.index)
    out: dict[str, list[tuple[int, str]]] = {}
    for i, (pid, s) in enumerate(zip(table["patient_id"].astype(str), site)):
        out.setdefault(pid, []).append((i, s))
    return out


@dataclass
class AttributionResult:
    """Per (seed, partner, condition) AUCs (``table``), the pooled summary with bootstrap
    intervals (``summary``) and what was skipped."""

    table: pd.DataFrame
    summary: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["patient_id", "condition", "reason"]))
    findings: list[str] = field(default_factory=list)


def _balanced(patients: list[str], positive: dict[str, bool], n: int | None, key: Sequence[int | str]) -> list[str]:
    """At most ``n`` patients, half of each class where the classes allow (a seeded draw)."""
    if n is None or len(patients) <= n:
        return patients
    rng = np.random.default_rng(stable_seed("targets", *key))
    pos = [p for p in patients if positive[p]]
    neg = [p for p in patients if not positive[p]]
    n_pos = min(len(pos), max(n // 2, n - len(neg)))
    picked = list(rng.choice(pos, n_pos, replace=False)) + list(rng.choice(neg, n - n_pos, replace=False))
    return sorted(str(p) for p in picked)


@dataclass
class _Task:
    """What the attribution of one study needs from its folder: the dataset, its two domains, the
    samples and how they were cut (crop, DCE phase, slab slices)."""

    out: Path
    study: Any
    dataset: str
    domains: tuple[str, str]
    data: Any
    crop: tuple[int, int, int]
    phase: int
    slices: int

    @property
    def table(self) -> pd.DataFrame:
        return self.data.table

    @property
    def directions(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """(training domain, target domain) of each model."""
        d1, d2 = self.domains
        return (d1, d2), (d2, d1)


def _check_arguments(factors: Sequence[str], partners: int, target_set: str) -> None:
    """One-line errors for an unknown factor, no partner or an unknown target set."""
    from mridomain.sim.breast import FACTORS

    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        raise InvalidArgumentError(f"unknown acquisition factor(s) {unknown}; choose from {', '.join(FACTORS)}")
    if partners < 1:
        raise InvalidArgumentError(f"partners {partners}: need at least one source partner per target patient")
    if target_set not in ("test", "all"):
        raise InvalidArgumentError(f"target_set {target_set!r}: choose test or all")


def _open_task(study_out: str | Path, model: str | None, phase: int | None) -> _Task:
    """Open the study folder and read how its samples were cut (one-line errors when attribution
    cannot run on it: several datasets, no crop, unknown phase)."""
    from mridomain.shift.study import open_study

    study = open_study(study_out, model=model)
    study.check_model()
    out = Path(study_out)
    if len(study.domains) != 1:
        raise InvalidArgumentError(f"{out}: attribution runs on a study of one simulated dataset "
                                   f"(this one has {len(study.domains)})")
    dataset, (d1, d2) = next(iter(study.domains.items()))
    data = study.data(dataset)
    table = data.table
    crop = tuple(int(table[c].iloc[0]) for c in ("crop_d", "crop_h", "crop_w")) if "crop_d" in table else None
    if crop is None:
        raise SchemaMismatchError(f"{out}: attribution needs a crop task (manifest with crop_d/h/w)")
    if phase is None:
        if "phase" not in table.columns:
            raise SchemaMismatchError(f"{out}: the manifest does not say which DCE phase it cropped (pass phase=)")
        phase = int(table["phase"].iloc[0])
    slices = int(table["n_slices"].iloc[0]) if "n_slices" in table.columns else crop[0]
    return _Task(out, study, dataset, (d1, d2), data, crop, phase, slices)


def _attributed_seeds(task: _Task, seeds: Sequence[int] | None) -> tuple[list[int], pd.DataFrame]:
    """The seeds to attribute (default: every seed whose two main models are kept) and the main
    experiment's finished runs; a one-line error when a seed asked for has no kept models."""
    from mridomain.shift.protocol import RunSpec
    from mridomain.shift.runner import model_folder, results_table

    runs = results_table(task.study.store.records())
    main = runs[(runs["experiment"] == "main") & (runs["status"] == "ok")]
    have = sorted({int(s) for s in main["seed"]
                   if all(model_folder(task.out / "models", RunSpec("main", task.dataset, int(s), a, b)).exists()
                          for a, b in task.directions)})
    chosen = have if seeds is None else [int(s) for s in seeds]
    missing = [s for s in chosen if s not in have]
    if not chosen or missing:
        raise EmptyInputError(task.out / "models", f"no kept main models for seed(s) {missing or 'any'} "
                                                   "(run the main experiment first)")
    return chosen, main


def _choose_targets(task: _Task, seeds: Sequence[int], target_set: str, max_patients: int | None,
                    positive: dict[str, bool], by_domain: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per training domain, the target-domain patients to re-image (see :func:`run_attribution`)."""
    table = task.table
    pids = table["patient_id"].astype(str).to_numpy()
    targets: dict[str, list[str]] = {}
    for source, target in task.directions:
        if target_set == "all":
            chosen = by_domain[target]
        else:
            found: set[str] = set()
            for seed in seeds:
                splits = study_splits(table, task.dataset, seed, task.study.fractions, task.study.stratify)
                found |= set(pids[(table["domain"].to_numpy() == target) & (splits == "test")].tolist())
            chosen = sorted(found)
        targets[source] = _balanced(chosen, positive, max_patients, (task.dataset, source))
    return targets


def _plan_reimaging(task: _Task, targets: dict[str, list[str]], by_domain: dict[str, list[str]],
                    exams: dict[str, Any], factors: Sequence[str], conditions: Sequence[str], partners: int,
                    sites: dict[str, list[tuple[int, str]]], acquired: dict[int, np.ndarray],
                    crops: dict[tuple[int, str, int], np.ndarray], slab: str) -> tuple[list[tuple], int, int]:
    """One work item per target patient: the (condition, partner) protocols it is imaged with.

    A condition that changes nothing reaching these pixels takes the acquired crops into ``crops``
    instead (the simulator is deterministic). Returns the work items, the number of series to
    image and the number of conditions reused."""
    from mridomain.sim.breast import replace_factors

    items, n_series, reused = [], 0, 0
    for source, chosen in targets.items():
        pool = by_domain[source]
        for pid in chosen:
            rng = np.random.default_rng(stable_seed("partner", pid, source))
            lent = [str(p) for p in rng.choice(pool, min(partners, len(pool)), replace=False)]
            phantom, own = exams[pid]
            jobs = []
            for r, partner in enumerate(lent):
                other = exams[partner][1]
                for cond in conditions:
                    p = replace_factors(own, other,
                                        [f for f in factors if _acts(f, task.phase)] if cond == "all" else cond)
                    if not _acts(cond, task.phase) or p == own:
                        # nothing that reaches these pixels changed: the simulator is deterministic,
                        # so the crops are the acquired ones (no need to image them again)
                        for i, _ in sites[pid]:
                            crops[(i, cond, r)] = acquired[i]
                        reused += 1
                        continue
                    jobs.append(((cond, r), p))
            if jobs:
                items.append((pid, phantom, jobs, task.slices, slab, task.phase, task.crop, sites[pid]))
                n_series += len(jobs)
    return items, n_series, reused


def _reimage_all(items: list[tuple], n_series: int, crops: dict[tuple[int, str, int], np.ndarray],
                 workers: int | None, progress: bool) -> list[dict[str, Any]]:
    """Run the planned re-imaging (one work item per patient, in parallel) into ``crops``; returns
    the (patient, condition, partner) that gave no crop, with the reason."""
    from mridomain.parallel import parallel_map

    skipped = []
    for results in parallel_map(_reimage_patient, items, workers=workers, total=len(items), progress=progress,
                                desc="re-image", unit="series", advance=len, advance_total=n_series):
        for pid, (cond, r), got, why in results:
            if got is None:
                skipped.append({"patient_id": pid, "condition": cond, "partner": r, "reason": why})
            else:
                for i, arr in got.items():
                    crops[(i, cond, r)] = arr
    return skipped


def _score_direction(task: _Task, source: str, chosen: list[str], seeds: Sequence[int], models: dict,
                     conditions: Sequence[str], n_partners: int, sites: dict[str, list[tuple[int, str]]],
                     acquired: dict[int, np.ndarray], crops: dict[tuple[int, str, int], np.ndarray],
                     reference: pd.DataFrame, n_boot: int) -> tuple[list[dict], pd.DataFrame | None]:
    """Score every crop of one direction with every seed's model: the per-seed AUC rows and the
    pooled summary (None when no sample has every condition imaged)."""
    target = task.domains[1] if source == task.domains[0] else task.domains[0]
    pids = task.table["patient_id"].astype(str).to_numpy()
    labels = task.table["label"].to_numpy().astype(np.int64)
    idx = [i for p in chosen for i, _ in sites[p]
           if all((i, c, r) in crops for c in conditions for r in range(n_partners))]
    if not idx:
        return [], None
    y = labels[idx]
    groups = pids[idx]
    acq = np.zeros((len(seeds), len(idx)))
    switched = np.zeros((len(seeds), len(conditions), n_partners, len(idx)))
    for k, seed in enumerate(seeds):
        classifier = models[(seed, source)]
        acq[k] = classifier.decision_function(np.stack([acquired[i] for i in idx]))
        stack = np.stack([crops[(i, c, r)] for c in conditions for r in range(n_partners) for i in idx])
        switched[k] = classifier.decision_function(stack).reshape(len(conditions), n_partners, len(idx))
    ref = reference[reference["train_domain"] == source].set_index("seed").reindex(seeds)
    auc_in = ref["auc_in_domain"].to_numpy(dtype=np.float64)
    a_acq, a_sw = _auc(acq, y), _auc(switched, y)
    rows = []
    for k, seed in enumerate(seeds):
        base = {"dataset": task.dataset, "seed": seed, "train_domain": source, "test_domain": target,
                "n": len(idx), "n_positive": int(y.sum()), "auc_in_domain": auc_in[k]}
        rows.append({**base, "condition": "acquired", "partner": None, "auc": a_acq[k]})
        for c, cond in enumerate(conditions):
            for r in range(n_partners):
                rows.append({**base, "condition": cond, "partner": r, "auc": a_sw[k, c, r]})
    summary = attribution_summary(acq, switched, y, groups, conditions, auc_in, n_boot=n_boot).assign(
        dataset=task.dataset, train_domain=source, test_domain=target, n_seeds=len(seeds), n_partners=n_partners,
        n_samples=len(idx), n_positive=int(y.sum()), n_patients=len(set(groups.tolist())))
    return rows, summary


def _joined(summaries: list[pd.DataFrame]) -> pd.DataFrame:
    """The directions' summaries in one table, dataset / domains / condition first."""
    summary = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    if len(summary):
        front = ["dataset", "train_domain", "test_domain", "condition"]
        summary = summary[front + [c for c in summary.columns if c not in front]]
    return summary


def _write_outputs(out: Path, result: AttributionResult, meta: dict[str, Any]) -> None:
    """attribution_runs.csv, attribution.csv, attribution_skipped.csv (when any), the figure and
    attribution_summary.json (``meta``)."""
    from mridomain.files import dump_json

    result.table.to_csv(out / "attribution_runs.csv", index=False)
    result.summary.to_csv(out / "attribution.csv", index=False)
    if len(result.skipped):
        result.skipped.to_csv(out / "attribution_skipped.csv", index=False)
    if len(result.summary):
        figure_attribution(result.summary).savefig(out / "fig_attribution.png", dpi=100)
    dump_json(meta, out / "attribution_summary.json")


def run_attribution(study_out: str | Path, archive: str | Path, sim_seed: int = 0, preset: str | Path = "dbc",
                    seeds: Sequence[int] | None = None, factors: Sequence[str] = PIXEL_FACTORS,
                    target_set: str = "test", partners: int = 3, max_patients: int | None = None,
                    phase: int | None = None, slab: str = "tumor", n_boot: int = 2000,
                    workers: int | None = None, progress: bool = True,
                    model: str | None = None) -> AttributionResult:
    """Attribute the out-of-domain change of a simulated study's main models to acquisition factors.

    ``study_out``: a study folder whose main experiment ran with kept models on a manifest built
    from a simulated archive; ``archive``: that archive; ``sim_seed`` / ``preset``: what it was
    simulated with. The target patients of each direction are fixed: ``target_set="test"`` takes
    the target domain's test patients of every attributed seed (their union), ``"all"`` every
    target-domain patient (M_j never saw a patient of the other domain, whatever the seed);
    ``max_patients`` caps them per direction (a seeded draw, half of each class where possible).
    Each target patient is re-imaged with ``partners`` source partners (drawn without replacement),
    once per factor and once with all factors switched, and every attributed seed's model scores
    every crop: the AUCs are pooled over seeds and partners, and intervals come from a bootstrap
    over seeds and patients (:func:`attribution_summary`). Writes ``attribution.csv`` (summary,
    with ``ci_low`` / ``ci_high`` and the ``interaction`` row), ``attribution_runs.csv`` (per seed,
    partner and condition) and ``fig_attribution.png`` into ``study_out``.
    ``model``: the user model (``package.module:callable``) the study was run with, repeated (a
    folder alone never chooses code to import).

    Steps: open the folder (:func:`_open_task`), pick the seeds (:func:`_attributed_seeds`) and
    load their models, pick the target patients (:func:`_choose_targets`), plan and run the
    re-imaging (:func:`_plan_reimaging`, one work item per patient), score both directions
    (:func:`_score_direction`), write the outputs.

    >>> run_attribution("no-such-study", "archive", partners=0)
    Traceback (most recent call last):
    ...
    mridomain.errors.InvalidArgumentError: partners 0: need at least one source partner per target patient
    """
    from mridomain.shift.classifier import ShiftClassifier
    from mridomain.shift.protocol import RunSpec
    from mridomain.shift.runner import model_folder

    _check_arguments(factors, partners, target_set)
    task = _open_task(study_out, model, phase)
    seeds, main = _attributed_seeds(task, seeds)
    # every model is loaded (and its folder checked) before any re-imaging work
    models = {(seed, source): ShiftClassifier.load(model_folder(task.out / "models",
                                                                RunSpec("main", task.dataset, seed, source, target)),
                                                   model=model)
              for seed in seeds for source, target in task.directions}
    exams = archive_protocols(archive, sim_seed, preset)
    table = task.table
    pids = table["patient_id"].astype(str).to_numpy()
    labels = table["label"].to_numpy().astype(np.int64)
    positive = {p: bool(labels[pids == p].max()) for p in set(pids.tolist())}
    by_domain = {d: sorted(set(pids[table["domain"].to_numpy() == d].tolist())) for d in task.domains}
    sites = _sites(table)
    targets = _choose_targets(task, seeds, target_set, max_patients, positive, by_domain)
    conditions = [*factors, "all"]
    # "acquired" is the archive's own crop (re-imaging with the patient's protocol reproduces it
    # exactly: checked below), so only the switched conditions are re-imaged
    acquired = {i: np.asarray(task.data.images[i]) for i in range(len(table))}
    crops: dict[tuple[int, str, int], np.ndarray] = {}
    items, n_series, reused = _plan_reimaging(task, targets, by_domain, exams, factors, conditions, partners, sites,
                                              acquired, crops, slab)
    _check_reproduces(exams, sites, acquired, task.slices, slab, task.phase, task.crop, archive, sim_seed)
    skipped = _reimage_all(items, n_series, crops, workers, progress)
    n_partners = min(partners, *(len(v) for v in by_domain.values()))
    rows, summaries = [], []
    reference = _reference(main, task.dataset)
    for source, chosen in targets.items():
        got_rows, summary = _score_direction(task, source, chosen, seeds, models, conditions, n_partners, sites,
                                             acquired, crops, reference, n_boot)
        rows += got_rows
        summaries += [summary] if summary is not None else []
    summary = _joined(summaries)
    result = AttributionResult(pd.DataFrame(rows), summary,
                               pd.DataFrame(skipped, columns=["patient_id", "condition", "partner", "reason"]))
    result.findings = attribution_findings(summary)
    _write_outputs(task.out, result, {"sim_seed": sim_seed, "preset": str(preset), "phase": task.phase, "seeds": seeds,
                                      "factors": list(factors), "target_set": target_set, "partners": n_partners,
                                      "max_patients": max_patients, "findings": result.findings,
                                      "n_skipped": len(skipped), "n_reimaged": n_series, "n_reused": reused})
    return result


def _auc(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC over the last axis of ``scores`` for labels ``y`` (Mann-Whitney with mid-ranks for
    ties: the same number as :func:`mridomain.shift.stats.auc`, for many score sets at once)."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return np.full(scores.shape[:-1], np.nan)
    ranks = rankdata(scores, axis=-1)
    return (ranks[..., y].sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def attribution_summary(acquired: np.ndarray, switched: np.ndarray, y: np.ndarray, groups: np.ndarray,
                        conditions: Sequence[str], auc_in: np.ndarray | None = None, n_boot: int = 2000,
                        confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Pooled changes with bootstrap intervals.

    ``acquired``: scores (seeds, samples) of the samples as acquired; ``switched``: (seeds,
    conditions, partners, samples) re-imaged with each condition's factor(s) from each partner;
    ``y``: labels; ``groups``: each sample's patient (the bootstrap resamples patients, within
    each class, and seeds); ``auc_in``: per seed, the model's in-domain AUC (Table 2).

    Rows: ``acquired`` (its AUC; ``change`` = ``delta``: acquired minus in-domain AUC, the sign
    of the study's Delta), one per condition (``change`` = AUC re-imaged minus AUC as acquired,
    mean over seeds and partners: positive means the factor raised the AUC), ``sum of factors``
    (the single-factor changes added up: every condition but ``all``) and ``interaction``
    (``all`` minus that sum). Each with ``ci_low`` / ``ci_high`` (percentile bootstrap) and
    ``distinguishable`` (the interval excludes zero).
    """
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups).astype(str)
    conditions = list(conditions)
    singles = [c for c, name in enumerate(conditions) if name != "all"]
    has_all = "all" in conditions
    auc_in = np.full(len(acquired), np.nan) if auc_in is None else np.asarray(auc_in, dtype=np.float64)

    def stats(seed_idx: np.ndarray, sample_idx: np.ndarray) -> np.ndarray:
        a = _auc(acquired[seed_idx][:, sample_idx], y[sample_idx])                      # (S,)
        sw = _auc(switched[seed_idx][:, :, :, sample_idx], y[sample_idx])                # (S, C, R)
        change = (sw - a[:, None, None]).mean(axis=(0, 2))                               # (C,)
        extra = [float(np.mean(a - auc_in[seed_idx])), float(change[singles].sum())]
        extra.append(float(change[conditions.index("all")] - change[singles].sum()) if has_all else np.nan)
        return np.concatenate([[a.mean()], sw.mean(axis=(0, 2)), change, extra])

    everyone = np.arange(len(y))
    point = stats(np.arange(len(acquired)), everyone)
    patients = {k: np.unique(groups[y == k]) for k in (0, 1)}
    members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        s_idx = rng.integers(0, len(acquired), len(acquired))
        picked = [members[g] for k in (0, 1) for g in rng.choice(patients[k], len(patients[k]))]
        boots.append(stats(s_idx, np.concatenate(picked)))
    boots = np.asarray(boots)
    q = (1 - confidence) / 2
    lo, hi = np.nanquantile(boots, q, axis=0), np.nanquantile(boots, 1 - q, axis=0)
    n_c = len(conditions)
    rows = []

    def row(name, auc_mean, j):
        rows.append({"condition": name, "auc_mean": auc_mean, "change": point[j], "ci_low": lo[j], "ci_high": hi[j],
                     "distinguishable": bool(lo[j] > 0 or hi[j] < 0)})

    row("acquired", point[0], 1 + 2 * n_c)
    rows[-1]["auc_in_domain"] = float(np.nanmean(auc_in))
    for c, name in enumerate(conditions):
        row(name, point[1 + c], 1 + n_c + c)
    row("sum of factors", np.nan, 2 + 2 * n_c)
    if has_all:
        row("interaction", np.nan, 3 + 2 * n_c)
    return pd.DataFrame(rows)


def attribution_findings(summary: pd.DataFrame) -> list[str]:
    """Sentences from the summary: the gap, the factors whose change is distinguishable from zero
    (and only those), all factors together, and the interaction."""
    out = []
    if not len(summary):
        return out
    for (ds, source, target), g in summary.groupby(["dataset", "train_domain", "test_domain"], sort=True):
        g = g.set_index("condition")
        acq = g.loc["acquired"]

        def ci(r) -> str:
            return f"{r.change:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"

        text = (f"{ds}, model trained on {source}, {int(acq.n_patients)} {target} patients ({int(acq.n_samples)} "
                f"samples, {int(acq.n_positive)} positive) re-imaged with {int(acq.n_partners)} {source} partner(s) "
                f"each, pooled over {int(acq.n_seeds)} seed(s): AUC {acq.auc_mean:.3f} as acquired; acquired minus "
                f"in-domain AUC {ci(acq)}.")
        factors = g.drop(index=[c for c in ("acquired", "all", "sum of factors", "interaction") if c in g.index])
        shown = factors[factors["distinguishable"]]
        if len(shown):
            text += " Factors whose change is distinguishable from zero (95% CI): " + ", ".join(
                f"{name} {ci(r)}" for name, r in shown.sort_values("change").iterrows()) + "."
        else:
            text += " No single factor's change is distinguishable from zero."
        if "all" in g.index:
            text += (f" All factors switched: {ci(g.loc['all'])}; single-factor changes summed: "
                     f"{ci(g.loc['sum of factors'])}")
            inter = g.loc["interaction"]
            text += (f"; interaction (all minus the sum) {ci(inter)}" if inter.distinguishable else
                     "; the interaction is not distinguishable from zero") + "."
        out.append(text)
    return out


def figure_attribution(summary: pd.DataFrame):
    """Change of AUC per condition (mean over seeds and partners) with its 95% bootstrap interval,
    against the change that would undo the gap (minus the acquired-minus-in-domain AUC)."""
    from matplotlib.figure import Figure

    groups = list(summary.groupby(["train_domain", "test_domain"], sort=True))
    fig = Figure(figsize=(6.5 * max(1, len(groups)), 4.2))
    axes = fig.subplots(1, max(1, len(groups)), squeeze=False)[0]
    for ax, ((source, target), g) in zip(axes, groups):
        gap = float(g.loc[g["condition"] == "acquired", "change"].iloc[0])
        g = g[g["condition"] != "acquired"]
        x = np.arange(len(g))
        colors = ["#555555" if c in ("all", "sum of factors", "interaction") else "#1f77b4" for c in g["condition"]]
        ax.bar(x, g["change"], color=colors, alpha=0.8)
        ax.errorbar(x, g["change"], yerr=[g["change"] - g["ci_low"], g["ci_high"] - g["change"]], fmt="none",
                    color="black", capsize=3)
        if math.isfinite(gap):
            ax.axhline(-gap, color="red", linestyle="--", linewidth=1,
                       label=f"change that would undo the gap: {-gap:+.3f}")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xticks(x, g["condition"], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("AUC change vs. as acquired (95% CI)")
        ax.set_title(f"M trained on {source}: {target} patients re-imaged\nwith factors of {source} partners' protocols",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _check_reproduces(exams: dict[str, Any], sites: dict[str, list[tuple[int, str]]], acquired: dict[int, np.ndarray],
                      slices: int, slab: str, phase: int, crop: tuple[int, int, int], archive: str | Path,
                      sim_seed: int) -> None:
    """Re-image one patient as acquired: it must give the archive's crops exactly, else the slab,
    phase or seed differ from the archive's and every comparison would be off."""
    import copy

    pid = next(p for p in sites if p in exams)
    own = exams[pid][1]
    phantom = copy.deepcopy(exams[pid][0])   # imaging caches textures in the phantom: the pool's stays small to send
    _, _, again, why = _reimage((pid, "acquired", phantom, own, slices, slab, phase, crop, sites[pid]))
    if again is None or any(not np.array_equal(again[i], acquired[i]) for i, _ in sites[pid]):
        raise SchemaMismatchError(f"{archive}: re-imaging {pid} with its own protocol (seed {sim_seed}, slab {slab!r}, "
                                  f"phase {phase}) does not reproduce the archive's crop"
                                  + (f" ({why})" if why else "") + "; was it simulated with --slab tumor?")


def _reference(main: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per seed and training domain: in-domain and out-of-domain AUC of the main run."""
    m = main[main["dataset"] == dataset]
    rows = []
    for (seed, dom), g in m.groupby(["seed", "train_domain"]):
        same = g.loc[g["test_domain"] == dom, "auc"]
        other = g.loc[g["test_domain"] != dom, "auc"]
        if len(same) and len(other):
            rows.append({"dataset": dataset, "seed": int(seed), "train_domain": dom, "auc_in_domain": float(same.iloc[0]),
                         "auc_main_out": float(other.iloc[0])})
    return pd.DataFrame(rows, columns=["dataset", "seed", "train_domain", "auc_in_domain", "auc_main_out"])
