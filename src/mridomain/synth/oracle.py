"""The simulator's known answer: what no generator can know, fitted voxel by voxel.

In the brain simulator every sequence is a function of each voxel's tissue mixture (PD, T1, T2),
field strength and noise, plus gadolinium, which only T1Gd sees. So how much of a sequence the others
can supply is computable without any generator: for each target sequence, a well-kept nonparametric
regressor (scikit-learn's ``HistGradientBoostingRegressor``) learns the target's voxel from the other
sequences' voxels in a 3 x 3 x 3 neighbourhood on the training subjects, and is scored on held-out
subjects. Per target it gives

* the **unexplained fraction** ``sum (y - y_hat)^2 / sum (y - mean y)^2`` over the brain (1 - R^2): the
  expected C_d order, since C_d ranks a sequence by how badly the others generate it;
* the **oracle map** ``|y - y_hat|``: the voxels the other sequences cannot explain, the expected M_d,
  scored against the simulator's regions with the same ROC AUC as the learned maps.

It runs on the volumes as written (noisy, which bounds what any model can reach) and, for simulated
data with a ``manifest.csv``, on the same subjects re-rendered without noise (the unique information
itself, without the noise floor every sequence shares). The *pairwise* form fits each target from each
single other sequence, the form C_d scores the generator in (A_ij: how well i alone generates j).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mridomain.errors import EmptyInputError, InvalidArgumentError
from mridomain.synth.data import Subject

__all__ = ["neighbourhood_features", "OracleResult", "fit_oracle", "oracle_contribution", "noise_free_subjects",
           "oracle_training_subjects", "oracle_for_run", "oracle_auc", "compare_with_oracle"]

#: voxels drawn per training subject to fit one target's regressor
VOXELS_PER_SUBJECT = 4000


def neighbourhood_features(volumes: Sequence[np.ndarray], mask: np.ndarray, radius: int = 1,
                           voxels: np.ndarray | None = None) -> np.ndarray:
    """``(N, F)`` features of the ``N`` voxels of ``mask``: each ``(S, H, W)`` volume's values at every
    offset of a ``(2 radius + 1)^3`` neighbourhood (edges repeated), ``F = len(volumes) x (2 radius + 1)^3``.
    ``voxels``: only these positions in the mask's voxel list (C order), in that order."""
    if not len(volumes):
        raise InvalidArgumentError("neighbourhood_features needs at least one volume")
    z, y, x = np.nonzero(mask)
    if voxels is not None:
        z, y, x = z[voxels], y[voxels], x[voxels]
    ph, pw = mask.shape[1] + 2 * radius, mask.shape[2] + 2 * radius
    # flat indices into the padded volume: one 1-D take per offset
    base = (z * ph + y) * pw + x
    shifts = [(dz * ph + dy) * pw + dx for dz in range(2 * radius + 1) for dy in range(2 * radius + 1)
              for dx in range(2 * radius + 1)]
    feats = np.empty((len(z), len(volumes) * len(shifts)), np.float32)
    for v, vol in enumerate(volumes):
        padded = np.pad(np.asarray(vol, np.float32), radius, mode="edge").ravel()
        for k, shift in enumerate(shifts):
            np.take(padded, base + shift, out=feats[:, v * len(shifts) + k])
    return feats


def _brain(subject: Subject) -> np.ndarray:
    return subject.truth > 0 if subject.truth is not None else subject.head_mask()


def _target_volume(subject: Subject, target: str, t: int | None) -> np.ndarray:
    """The (S, H, W) volume the oracle predicts: the target averaged over its time points (``t`` None,
    the brain setting) or its time point ``t``."""
    return subject.volumes[target].mean(axis=0) if t is None else subject.volumes[target][t]


def _xy(subject: Subject, target: str, sources: Sequence[str], t: int | None = None, radius: int = 1,
        rng: np.random.Generator | None = None, n_pick: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features and target voxels. ``t`` None: every sequence averaged over its time points (the brain
    setting, all 3-D); ``t`` a time point of the target: every time point of every source is a
    feature volume of its own (a 4-D protocol, where wash-in is a difference of DCE time points).
    With ``rng``: only ``n_pick`` brain voxels drawn without replacement (features are built for
    those alone: a training subject needs a few thousand of its hundreds of thousands)."""
    mask = _brain(subject)
    vols = ([subject.volumes[s].mean(axis=0) for s in sources] if t is None
            else [v for s in sources for v in subject.volumes[s]])
    y = _target_volume(subject, target, t)
    if rng is not None:
        n = int(mask.sum())
        voxels = rng.choice(n, size=min(n_pick, n), replace=False)
        return neighbourhood_features(vols, mask, radius, voxels), y[mask][voxels], mask
    return neighbourhood_features(vols, mask, radius), y[mask], mask


@dataclass
class OracleResult:
    """Per target sequence: ``table`` (sequence, unexplained fraction, rank) and ``maps``
    (``{subject_id: {sequence: (S, H, W) |y - y_hat|}}`` of the held-out subjects); ``pairs`` has
    one row per fitted regressor (source(s), target, unexplained, psnr)."""

    table: pd.DataFrame
    maps: dict[str, dict[str, np.ndarray]]
    kind: str
    pairs: pd.DataFrame | None = None
    # per held-out subject and fitted regressor: PSNR and SSIM as Table 1 scores the generator (the
    # head's slices, data range 1), the prediction exact outside the brain (subject, source, target)
    subject_metrics: pd.DataFrame | None = None

    @property
    def order(self) -> list[str]:
        """Sequences from the most to the least unexplained (the expected C_d order)."""
        return self.table.sort_values("unexplained", ascending=False)["sequence"].tolist()


def _fit_target(train: Sequence[Subject], test: Sequence[Subject], target: str, sources: Sequence[str],
                per_timepoint: bool, rng: np.random.Generator, seed: int, voxels_per_subject: int, radius: int
                ) -> tuple[float, float, dict[str, np.ndarray], list[float], dict[str, float]]:
    """One target from ``sources``: ``(unexplained fraction, RMSE over the brain, {test subject:
    (S, H, W) RMS error map}, PSNR per test subject, {test subject: SSIM})``, the error zero outside
    the brain. PSNR and SSIM are Table 1's (the head's slices), of the target with the brain predicted."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from mridomain.synth.contribution import image_metrics

    times = range(train[0].volumes[target].shape[0]) if per_timepoint else [None]
    sse, ys_all = 0.0, []
    sq_maps: dict[str, list[np.ndarray]] = {sub.subject_id: [] for sub in test}
    ssims: dict[str, list[float]] = {sub.subject_id: [] for sub in test}
    heads = {sub.subject_id: sub.head_slices() for sub in test}   # where Table 1 scores a subject
    for t in times:
        xs, ys = [], []
        for sub in train:
            x, y, _ = _xy(sub, target, sources, t, radius, rng, voxels_per_subject)
            xs.append(x)
            ys.append(y)
        model = HistGradientBoostingRegressor(max_iter=100, learning_rate=0.15, max_leaf_nodes=31,
                                              early_stopping=False, random_state=seed)
        model.fit(np.concatenate(xs), np.concatenate(ys))
        for sub in test:
            x, y, mask = _xy(sub, target, sources, t, radius)
            y_hat = model.predict(x).astype(np.float32)
            sq = (y - y_hat) ** 2
            sse += float(sq.sum())
            ys_all.append(y)
            full = np.zeros(mask.shape, np.float32)
            full[mask] = sq
            sq_maps[sub.subject_id].append(full)
            truth = _target_volume(sub, target, t)
            predicted = truth.astype(np.float32, copy=True)
            predicted[mask] = y_hat
            head = heads[sub.subject_id]
            ssims[sub.subject_id].append(image_metrics(predicted[head], truth[head])["ssim"])
    maps, psnrs = {}, []
    for sub in test:
        mse = np.mean(sq_maps[sub.subject_id], axis=0)
        maps[sub.subject_id] = np.sqrt(mse)
        # PSNR as Table 1 computes it (the head's slices, data range 1), outside the brain exact
        psnrs.append(10 * np.log10(1.0 / max(float(mse[heads[sub.subject_id]].mean()), 1e-12)))
    y_all = np.concatenate(ys_all)
    return (sse / float(((y_all - y_all.mean()) ** 2).sum()), float(np.sqrt(sse / len(y_all))), maps,
            psnrs, {k: float(np.mean(v)) for k, v in ssims.items()})


def fit_oracle(train: Sequence[Subject], test: Sequence[Subject], sequences: Sequence[str], seed: int = 0,
               kind: str = "noisy", voxels_per_subject: int = VOXELS_PER_SUBJECT, progress: bool = True,
               per_timepoint: bool = False, radius: int = 1, pairwise: bool = False,
               targets: Sequence[str] | None = None) -> OracleResult:
    """Fit one regressor per target sequence on ``train`` (all other sequences as inputs,
    ``(2 radius + 1)^3`` neighbourhoods) and score it on ``test`` (subjects must have every sequence).
    ``per_timepoint``: 4-D sequences enter time point by time point, and a 4-D target gets one
    regressor per time point (its unexplained fraction pools them; its map is their mean).

    ``pairwise``: one regressor per ordered pair instead, each target from *one* other sequence, as
    the generator is scored for C_d (A_ij is how well i alone generates j). A target's unexplained
    fraction, PSNR and map are then the means over its sources, and ``pairs`` holds every pair's.

    ``targets``: fit only these of ``sequences`` as targets (default: every one); the others are still
    inputs."""
    sequences = list(sequences)
    targets = sequences if targets is None else list(targets)
    unknown = sorted(set(targets) - set(sequences))
    if unknown:
        raise InvalidArgumentError(f"oracle targets {unknown} are not among the sequences {sequences}")
    train = [s for s in train if all(q in s.volumes for q in sequences)]
    test = [s for s in test if all(q in s.volumes for q in sequences)]
    if not train or not test:
        raise EmptyInputError("oracle", "needs training and held-out subjects with every sequence")
    rng = np.random.default_rng(seed)
    rows, pair_rows, subject_rows, maps = [], [], [], {s.subject_id: {} for s in test}
    from mridomain.progress import progress_bar

    for target in progress_bar(targets, desc=f"oracle ({kind})", unit="sequence", enabled=progress):
        others = [s for s in sequences if s != target]
        groups = [[s] for s in others] if pairwise else [others]
        fits = [_fit_target(train, test, target, sources, per_timepoint, rng, seed, voxels_per_subject, radius)
                for sources in groups]
        unexplained, rmse, error_maps, psnrs, ssims = zip(*fits)
        psnr = [float(np.mean(p)) for p in psnrs]
        pair_rows += [{"source": "+".join(sources), "target": target, "unexplained": u, "psnr": p}
                      for sources, u, p in zip(groups, unexplained, psnr)]
        subject_rows += [{"subject": sub.subject_id, "source": "+".join(sources), "target": target,
                          "psnr": p[n], "ssim": ss[sub.subject_id]}
                         for sources, p, ss in zip(groups, psnrs, ssims) for n, sub in enumerate(test)]
        for sub in test:
            maps[sub.subject_id][target] = np.mean([m[sub.subject_id] for m in error_maps], axis=0)
        rows.append({"sequence": target, "unexplained": float(np.mean(unexplained)),
                     "rmse_brain": float(np.mean(rmse)), "psnr": float(np.mean(psnr))})
    table = pd.DataFrame(rows)
    table["rank"] = table["unexplained"].rank(ascending=False, method="min").astype(int)
    return OracleResult(table, maps, kind, pd.DataFrame(pair_rows), pd.DataFrame(subject_rows))


def oracle_contribution(result: OracleResult) -> pd.DataFrame | None:
    """C_d by eq. 4 of the pairwise oracle's own translations: the order a generator exactly as good as
    the oracle would get from :func:`~mridomain.synth.contribution.contribution_table` (A_ij = nPSNR +
    nSSIM, z-scored over the per-subject rows). The oracle has no self-translations, so the diagonal is
    left out (``include_self=False``). None for an oracle that is not pairwise."""
    from mridomain.synth.contribution import adjacency, centrality

    m = result.subject_metrics
    if m is None or m.empty or m["source"].str.contains("+", regex=False).any():
        return None
    sequences = list(result.table["sequence"])
    return centrality(adjacency(m, sequences, include_self=False)[0])


def noise_free_subjects(data_root: str | Path, subject_ids: Sequence[str], sequences: Sequence[str],
                        normalization: dict | None = None) -> list[Subject]:
    """The simulated subjects ``subject_ids`` of ``data_root`` re-rendered without noise (from the
    seed, index and voxel size in its ``manifest.csv``), loaded and normalized as the data loader does
    (``normalization``: the run's, None the paper's; a median normalization keeps the levels fitted on
    the noisy training volumes)."""
    from mridomain.sim.brain.simulate import make_subject, write_subject
    from mridomain.synth.data import load_subject

    manifest_path = Path(data_root) / "manifest.csv"
    if not manifest_path.exists():
        raise EmptyInputError(manifest_path, "no simulator manifest: noise-free volumes cannot be re-rendered")
    manifest = pd.read_csv(manifest_path).set_index("subject_id")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for sid in subject_ids:
            row = manifest.loc[sid]
            # manifests written before the seed column existed: the demo's seed 0 and the id's number
            seed = int(row["seed"]) if "seed" in row and pd.notna(row["seed"]) else 0
            index = int(row["index"]) if "index" in row and pd.notna(row["index"]) else int(sid.rsplit("_", 1)[-1])
            clean = make_subject(seed, index, voxel_mm=float(row["voxel_mm"]), noise=False)
            if clean.subject_id != sid:
                raise InvalidArgumentError(f"{sid}: re-rendered subject is {clean.subject_id} (seed {seed}?)")
            out.append(load_subject(write_subject(clean, Path(tmp)), sequences, normalization=normalization))
    return out


def oracle_training_subjects(train: Sequence[Subject], sequences: Sequence[str], max_train: int = 12
                             ) -> list[Subject]:
    """The training subjects the run's oracle is fitted on: at most ``max_train``, evenly spaced, of
    those with every sequence (all of ``train`` when none has)."""
    train = [s for s in train if all(q in s.volumes for q in sequences)] or list(train)
    pick = np.unique(np.linspace(0, len(train) - 1, min(max_train, len(train))).round().astype(int))
    return [train[k] for k in pick]


def oracle_for_run(train: Sequence[Subject], test: Sequence[Subject], sequences: Sequence[str],
                   data_root: str | Path | None = None, noise_free: bool = True, max_train: int = 12,
                   max_train_noise_free: int = 6, seed: int = 0, progress: bool = True,
                   pairwise: bool = True, normalization: dict | None = None) -> dict[str, OracleResult]:
    """``{"noisy": ..., "pairwise": ..., "noise-free": ...}`` oracles for a run's training and test
    subjects (at most ``max_train`` training subjects, evenly spaced, and ``max_train_noise_free`` of
    them re-rendered without noise: rendering costs seconds per subject; noise-free only for simulated
    data). ``pairwise``: also each target from each single other sequence on the noisy volumes, the
    known answer in the form C_d measures (:func:`fit_oracle`). ``normalization``: the run's, for the
    re-rendered noise-free volumes (the noisy ones come normalized in ``train`` and ``test``)."""
    train = oracle_training_subjects(train, sequences, max_train)
    out = {"noisy": fit_oracle(train, test, sequences, seed, "noisy", progress=progress)}
    if pairwise and len(sequences) > 2:
        out["pairwise"] = fit_oracle(train, test, sequences, seed, "pairwise", progress=progress, pairwise=True)
    if noise_free and data_root is not None and (Path(data_root) / "manifest.csv").exists():
        step = max(1, len(train) // max_train_noise_free)
        clean_train = noise_free_subjects(data_root, [s.subject_id for s in train[::step][:max_train_noise_free]],
                                          sequences, normalization)
        clean_test = noise_free_subjects(data_root, [s.subject_id for s in test], sequences, normalization)
        out["noise-free"] = fit_oracle(clean_train, clean_test, sequences, seed, "noise-free", progress=progress)
    return out


def oracle_auc(result: OracleResult, subjects: Sequence[Subject], checks: Sequence[tuple[str, str]]
               ) -> dict[tuple[str, str], float]:
    """ROC AUC of the oracle map of each ``(sequence, region)`` check, voxels pooled over ``subjects``
    (region against the rest of the brain, as the learned maps are scored)."""
    from sklearn.metrics import roc_auc_score

    from mridomain.synth.differentiation import region_masks

    out = {}
    for seq, region in checks:
        pos, neg = [], []
        for sub in subjects:
            m = result.maps.get(sub.subject_id, {}).get(seq)
            if m is None or sub.truth is None:
                continue
            r = region_masks(sub.truth)
            pos.append(m[r[region] & r["brain"]])
            neg.append(m[r["brain"] & ~r[region]])
        if pos and sum(map(len, pos)) and sum(map(len, neg)):
            p, n = np.concatenate(pos), np.concatenate(neg)
            out[(seq, region)] = float(roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p, n]))
    return out


def compare_with_oracle(contribution: pd.DataFrame, oracles: dict[str, OracleResult]) -> pd.DataFrame:
    """Learned C_d next to each oracle's unexplained fraction, with ranks; ``attrs`` hold the
    Spearman rank correlation and whether the top sequences agree, per oracle."""
    from scipy.stats import spearmanr

    table = contribution[["sequence", "c_d", "rank_d"]].copy()
    summary = {}
    for kind, res in oracles.items():
        o = res.table.set_index("sequence")
        table[f"unexplained_{kind}"] = table["sequence"].map(o["unexplained"])
        table[f"rank_{kind}"] = table["sequence"].map(o["rank"])
        rho = float(spearmanr(table["c_d"], table[f"unexplained_{kind}"]).statistic)
        summary[kind] = {"spearman": rho, "learned_top": table.sort_values("c_d", ascending=False)["sequence"].iloc[0],
                         "oracle_top": res.order[0], "oracle_order": res.order}
        summary[kind]["top_matches"] = summary[kind]["learned_top"] == summary[kind]["oracle_top"]
        own = oracle_contribution(res)
        if own is not None:
            # the same oracle scored as eq. 4 scores the generator: what C_d a perfect-as-the-oracle
            # generator would show, PSNR's and SSIM's own leanings included
            key = f"{kind} eq. 4"
            c_d = table["sequence"].map(own.set_index("sequence")["c_d"])
            table[f"c_d_{kind}_eq4"] = c_d
            order = own.sort_values("c_d", ascending=False)["sequence"].tolist()
            summary[key] = {"spearman": float(spearmanr(table["c_d"], c_d).statistic),
                            "learned_top": summary[kind]["learned_top"], "oracle_top": order[0],
                            "oracle_order": order}
            summary[key]["top_matches"] = summary[key]["learned_top"] == order[0]
    table.attrs["summary"] = summary
    return table
