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
from mridomain.shift.stats import auc, bootstrap_ci

__all__ = ["PIXEL_FACTORS", "AttributionResult", "archive_protocols", "run_attribution", "attribution_summary"]

#: the acquisition factors of mridomain.sim.FACTORS the study switches by default (the issue's list:
#: vendor reconstruction and filters, coil, field strength, TR/TE/flip, matrix and FOV, fat
#: suppression, agent); "position" (HFP/FFP mirroring) and "header" (text only) can be added
PIXEL_FACTORS = ("recon", "coil", "field_strength", "timing", "matrix", "fat_suppression", "contrast_agent")


#: below these, the findings do not share the drop out as fractions (AUC steps too coarse / no drop)
MIN_POSITIVES = 5
MIN_DROP = 0.02


def _patient_index(pid: str) -> int:
    try:
        return int(str(pid).rsplit("_", 1)[-1]) - 1
    except ValueError:
        raise SchemaMismatchError(f"patient id {pid!r}: not a simulated Breast_MRI_NNN id") from None


def archive_protocols(archive: str | Path, sim_seed: int, preset: str | Path = "dbc") -> dict[str, Any]:
    """The Protocol of every patient of a simulated archive, drawn again as ``simulate`` drew them
    (phantoms of ``(seed, i)``, protocols from ``rng([seed, 99])``), and checked against the
    archive's manifest: a one-line :class:`SchemaMismatchError` when the seed or preset differ."""
    from mridomain.sim import load_preset, patient_phantom, sample_protocols

    path = Path(archive) / "manifest.parquet"
    if not path.exists():
        raise EmptyInputError(Path(archive), "no manifest.parquet (not an archive written by mridomain simulate)")
    sim = pd.read_parquet(path)
    first = sim.drop_duplicates("patient_id")
    n = max(_patient_index(p) for p in first["patient_id"]) + 1
    phantoms = [patient_phantom(sim_seed, i) for i in range(n)]
    protocols = sample_protocols(load_preset(preset), n, np.random.default_rng([sim_seed, 99]),
                                 body_widths_mm=[2 * ph.torso_w for ph in phantoms])
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


def _reimage(task: tuple[str, str, Any, Any, int, str, int, tuple[int, int, int]]) -> tuple[str, str, np.ndarray | None, str | None]:
    """Worker: one patient under one condition -> its crop around its own tumor box."""
    from mridomain.sim import acquire_series

    pid, condition, phantom, protocol, slices, slab, phase, crop = task
    try:
        series = acquire_series(phantom, protocol, slices=slices, slab=slab, phase=phase)
    except Exception as err:  # noqa: BLE001 - recorded per patient and condition
        return pid, condition, None, f"{type(err).__name__}: {err}"
    if series.tumor_box is None:
        return pid, condition, None, "no tumor box in the re-imaged series"
    s0, s1, r0, r1, c0, c1 = series.tumor_box
    centre = ((s0 + s1) / 2, (r0 + r1) / 2, (c0 + c1) / 2)
    return pid, condition, crop_volume(series.volume, centre, crop), None


@dataclass
class AttributionResult:
    """Per-seed AUCs (``table``), their summary over seeds (``summary``) and what was skipped."""

    table: pd.DataFrame
    summary: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["patient_id", "condition", "reason"]))
    findings: list[str] = field(default_factory=list)


def run_attribution(study_out: str | Path, archive: str | Path, sim_seed: int = 0, preset: str | Path = "dbc",
                    seeds: Sequence[int] | None = None, factors: Sequence[str] = PIXEL_FACTORS,
                    target_set: str = "test", phase: int | None = None, slab: str = "tumor",
                    workers: int | None = None, progress: bool = True,
                    model: str | None = None) -> AttributionResult:
    """Attribute the out-of-domain drop of a simulated study's main models to acquisition factors.

    ``study_out``: a study folder whose main experiment ran with kept models on a manifest from
    :func:`mridomain.shift.manifest.manifest_from_simulation`; ``archive``: that archive;
    ``sim_seed`` / ``preset``: what it was simulated with. ``seeds``: main seeds to attribute
    (default all with kept models). ``target_set``: ``test`` (the seed's Test_k, so that
    ``acquired`` is R_{j,k} itself) or ``all`` (every patient of the target domain: M_j never saw
    one, and more positives give a firmer AUC). Writes ``attribution.csv`` (summary),
    ``attribution_runs.csv`` (per seed), ``fig_attribution.png`` into ``study_out``.
    ``model``: the user model (``package.module:callable``) the study was run with, repeated (a
    folder alone never chooses code to import).
    """
    from mridomain.files import dump_json
    from mridomain.parallel import parallel_map
    from mridomain.shift.classifier import ShiftClassifier
    from mridomain.shift.protocol import RunSpec
    from mridomain.shift.runner import model_folder, results_table
    from mridomain.shift.study import open_study
    from mridomain.sim import FACTORS, replace_factors

    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        raise InvalidArgumentError(f"unknown acquisition factor(s) {unknown}; choose from {', '.join(FACTORS)}")
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
    runs = results_table(study.store.records())
    main = runs[(runs["experiment"] == "main") & (runs["status"] == "ok")]
    have = sorted({int(s) for s in main["seed"]
                   if all(model_folder(out / "models", RunSpec("main", dataset, int(s), a, b)).exists()
                          for a, b in ((d1, d2), (d2, d1)))})
    seeds = have if seeds is None else [int(s) for s in seeds]
    missing = [s for s in seeds if s not in have]
    if not seeds or missing:
        raise EmptyInputError(out / "models", f"no kept main models for seed(s) {missing or 'any'} "
                                              "(run the main experiment first)")
    # every model is loaded (and its folder checked) before any re-imaging work
    models = {(seed, source): ShiftClassifier.load(model_folder(out / "models", RunSpec("main", dataset, seed, source,
                                                                                      target)), model=model)
              for seed in seeds for source, target in ((d1, d2), (d2, d1))}
    exams = archive_protocols(archive, sim_seed, preset)
    by_domain = {d: sorted(table.loc[table["domain"] == d, "patient_id"].unique()) for d in (d1, d2)}
    labels = dict(zip(table["patient_id"], table["label"]))

    # target patients of every (seed, direction); a partner is drawn once per target patient so the
    # re-imaged crops serve every seed that tests on that patient
    if target_set not in ("test", "all"):
        raise InvalidArgumentError(f"target_set {target_set!r}: choose test or all")
    targets: dict[tuple[int, str], list[str]] = {}
    for seed in seeds:
        splits = study_splits(table, dataset, seed, study.fractions, study.stratify)
        for source, target in ((d1, d2), (d2, d1)):
            mask = table["domain"].to_numpy() == target
            if target_set == "test":
                mask &= splits == "test"
            targets[(seed, source)] = sorted(set(table.loc[mask, "patient_id"]))
    conditions = ["acquired", *factors, "all"]
    # "acquired" is the archive's own crop (re-imaging with the patient's protocol reproduces it
    # exactly: tests/test_shift_attribution.py), so only the switched conditions are re-imaged
    crops: dict[tuple[str, str], np.ndarray] = {(str(p), "acquired"): np.asarray(data.images[i])
                                                for i, p in enumerate(table["patient_id"])}
    tasks, seen, reused = [], set(), 0
    for (_seed, source), pids in targets.items():
        for pid in pids:
            partner = by_domain[source][int(np.random.default_rng(stable_seed("partner", pid)).integers(len(by_domain[source])))]
            phantom, own = exams[pid]
            _, lent = exams[partner]
            for cond in conditions[1:]:
                key = (pid, cond)
                if key in seen:
                    continue
                seen.add(key)
                p = replace_factors(own, lent, [f for f in factors if _acts(f, phase)] if cond == "all" else cond)
                if not _acts(cond, phase) or p == own:
                    # nothing that reaches these pixels changed: the simulator is deterministic, so
                    # the crop is the acquired one (no need to image it again)
                    crops[key] = crops[(pid, "acquired")]
                    reused += 1
                    continue
                tasks.append((pid, cond, phantom, p, crop[0], slab, phase, crop))
    _check_reproduces(exams, crops, slab, phase, crop, archive, sim_seed)
    skipped = []
    for pid, cond, arr, why in parallel_map(_reimage, tasks, workers=workers, total=len(tasks), progress=progress,
                                            desc="re-image", unit="series"):
        if arr is None:
            skipped.append({"patient_id": pid, "condition": cond, "reason": why})
        else:
            crops[(pid, cond)] = arr
    rows = []
    for (seed, source), pids in targets.items():
        target = d2 if source == d1 else d1
        classifier = models[(seed, source)]
        ok = [p for p in pids if all((p, c) in crops for c in conditions)]   # the same patients in every condition
        y = np.array([labels[p] for p in ok])
        for cond in conditions:
            scores = classifier.decision_function(np.stack([crops[(p, cond)] for p in ok])) if ok else np.zeros(0)
            value = auc(y, scores) if len(set(y.tolist())) == 2 else float("nan")
            rows.append({"dataset": dataset, "seed": seed, "train_domain": source, "test_domain": target,
                         "condition": cond, "auc": value, "n": len(ok), "n_positive": int(y.sum())})
    per_seed = pd.DataFrame(rows)
    per_seed = per_seed.merge(_reference(main, dataset), on=["dataset", "seed", "train_domain"], how="left")
    summary = attribution_summary(per_seed)
    result = AttributionResult(per_seed, summary, pd.DataFrame(skipped, columns=["patient_id", "condition", "reason"]))
    result.findings = attribution_findings(summary)
    per_seed.to_csv(out / "attribution_runs.csv", index=False)
    summary.to_csv(out / "attribution.csv", index=False)
    if len(result.skipped):
        result.skipped.to_csv(out / "attribution_skipped.csv", index=False)
    figure_attribution(per_seed, summary).savefig(out / "fig_attribution.png", dpi=100)
    dump_json({"sim_seed": sim_seed, "preset": str(preset), "phase": phase, "seeds": seeds, "factors": list(factors),
               "target_set": target_set, "findings": result.findings, "n_skipped": len(skipped),
               "n_reimaged": len(tasks), "n_reused": reused}, out / "attribution_summary.json")
    return result


def _check_reproduces(exams: dict[str, Any], crops: dict[tuple[str, str], np.ndarray], slab: str, phase: int,
                      crop: tuple[int, int, int], archive: str | Path, sim_seed: int) -> None:
    """Re-image one patient as acquired: it must give the archive's crop exactly, else the slab,
    phase or seed differ from the archive's and every comparison would be off."""
    from mridomain.sim import patient_phantom

    pid = next(p for p, c in crops if c == "acquired" and p in exams)
    own = exams[pid][1]
    phantom = patient_phantom(sim_seed, _patient_index(pid))   # a fresh copy: the pool's stays small to send
    _, _, again, why = _reimage((pid, "acquired", phantom, own, crop[0], slab, phase, crop))
    if again is None or not np.array_equal(again, crops[(pid, "acquired")]):
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


def attribution_summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per (training domain, condition): AUC mean ± std over seeds, its paired change from
    ``acquired`` with a bootstrap CI, and the fraction of the drop (in-domain minus acquired
    out-of-domain AUC, means over seeds) it recovers."""
    rows = []
    for (ds, source, target), g in per_seed.groupby(["dataset", "train_domain", "test_domain"], sort=True):
        base = g[g["condition"] == "acquired"].set_index("seed")["auc"]
        drop = float((g[g["condition"] == "acquired"].set_index("seed")["auc_in_domain"] - base).mean())
        for cond, c in g.groupby("condition", sort=False):
            a = c.set_index("seed")["auc"]
            change = (a - base.reindex(a.index)).dropna()
            lo, hi = bootstrap_ci(change.to_numpy())
            rows.append({"dataset": ds, "train_domain": source, "test_domain": target, "condition": cond,
                         "auc_mean": float(a.mean()), "auc_std": float(a.std(ddof=1)) if len(a) > 1 else float("nan"),
                         "change": float(change.mean()) if len(change) else float("nan"), "change_ci_low": lo,
                         "change_ci_high": hi, "drop": drop,
                         "recovered_fraction": float(change.mean() / drop) if abs(drop) > 1e-9 and len(change) else float("nan"),
                         "n_seeds": int(len(a)), "n_patients": int(c["n"].iloc[0]), "n_positive": int(c["n_positive"].iloc[0])})
    order = {c: i for i, c in enumerate(["acquired", *PIXEL_FACTORS, "all"])}
    out = pd.DataFrame(rows)
    if len(out):
        out = out.sort_values(["train_domain", "condition"], key=lambda s: s.map(order).fillna(99) if s.name == "condition" else s,
                              kind="stable").reset_index(drop=True)
    return out


def attribution_findings(summary: pd.DataFrame) -> list[str]:
    """Sentences from the summary: the drop, what switching everything recovers, the largest factor."""
    out = []
    for (ds, source, target), g in summary.groupby(["dataset", "train_domain", "test_domain"], sort=True):
        g = g.set_index("condition")
        drop = float(g["drop"].iloc[0])
        acq = g.loc["acquired"]
        head = (f"{ds}, model trained on {source}, tested on {target} patients (n = {int(acq.n_patients)}, "
                f"{int(acq.n_positive)} positive, {int(acq.n_seeds)} seed(s)): AUC {acq.auc_mean:.3f} as acquired; "
                f"in-domain AUC minus this = {drop:+.3f}.")
        if "all" in g.index:
            a = g.loc["all"]
            head += (f" Re-imaged with every factor switched to {source}'s: AUC {a.auc_mean:.3f} "
                     f"(change {a.change:+.3f}" + (f", 95% CI {a.change_ci_low:+.3f} to {a.change_ci_high:+.3f}"
                                                    if math.isfinite(a.change_ci_low) else "") + ").")
        factors = g.drop(index=[c for c in ("acquired", "all") if c in g.index])
        if len(factors):
            best = factors["change"].idxmax()
            b = factors.loc[best]
            head += f" Largest single-factor change: {best} ({b.change:+.3f})"
            if int(acq.n_positive) < MIN_POSITIVES:
                head += (f"; with {int(acq.n_positive)} positive patient(s) among {int(acq.n_patients)} the AUC "
                         "is decided by where so few patients rank: too coarse to attribute anything "
                         "(more seeds, a larger archive or target_set='all' give more).")
            elif drop < MIN_DROP:
                head += "; out-of-domain AUC was not lower here, so there is no drop to share out."
            elif math.isfinite(b.recovered_fraction):
                head += f", {100 * b.recovered_fraction:.0f}% of the drop."
        out.append(head)
    return out


def figure_attribution(per_seed: pd.DataFrame, summary: pd.DataFrame):
    """AUC change from ``acquired`` per condition (bars: mean over seeds; dots: seeds), with the
    drop to recover (in-domain minus acquired) as a dashed line."""
    from matplotlib.figure import Figure

    groups = list(summary.groupby(["train_domain", "test_domain"], sort=True))
    fig = Figure(figsize=(6.5 * max(1, len(groups)), 3.8))
    axes = fig.subplots(1, max(1, len(groups)), squeeze=False)[0]
    for ax, ((source, target), g) in zip(axes, groups):
        g = g[g["condition"] != "acquired"]
        x = np.arange(len(g))
        ax.bar(x, g["change"], color=["#1f77b4" if c != "all" else "#555555" for c in g["condition"]], alpha=0.8)
        base = per_seed[(per_seed["train_domain"] == source) & (per_seed["condition"] == "acquired")].set_index("seed")["auc"]
        for i, cond in enumerate(g["condition"]):
            a = per_seed[(per_seed["train_domain"] == source) & (per_seed["condition"] == cond)].set_index("seed")["auc"]
            ch = (a - base.reindex(a.index)).dropna()
            ax.scatter(np.full(len(ch), i), ch, s=12, color="black", zorder=3)
        drop = float(g["drop"].iloc[0]) if len(g) else float("nan")
        if math.isfinite(drop):
            ax.axhline(drop, color="red", linestyle="--", linewidth=1,
                       label=f"in-domain minus acquired AUC {drop:+.3f}")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xticks(x, g["condition"], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("AUC change vs. as acquired")
        ax.set_title(f"M trained on {source}, {target} test patients re-imaged\nwith one factor of {source}'s protocol",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
