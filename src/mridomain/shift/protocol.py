"""The paper's protocol (§3.1) as pure functions: splits, runs, mixing sets, noise.

Per dataset, domain and seed, patients are split at random into 2/3 train, 1/6 validation and
1/6 test (:func:`split_domain`); every (experiment, dataset, seed, training domain, setting) is
one independent :class:`RunSpec`. Everything random is a pure function of the seed and the names
involved, so a run reproduces in any process, on any machine, in any order.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from mridomain.data.splits import check_fractions, split_counts
from mridomain.shift.manifest import ManifestError

__all__ = ["PAPER_FRACTIONS", "MIXING_FRACTIONS", "NOISE_ALPHAS", "EXPERIMENTS", "RunSpec", "split_domain",
           "study_splits", "check_splits", "mixing_indices", "add_noise", "plan_runs", "stable_seed"]

#: §3.1: "random subsets (by patient) of 2/3 for training, 1/6 for validation, and 1/6 for testing"
PAPER_FRACTIONS = (2 / 3, 1 / 6, 1 / 6)
#: Appendix A.1: "a fraction f in [0.1, 0.2, 0.3, 0.4, 0.5] of the training set"
MIXING_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)
#: Appendix A.2: "alpha in [1, 2, 3, 4, 5, 7, 10, 15, 30, 50]"
NOISE_ALPHAS = (1, 2, 3, 4, 5, 7, 10, 15, 30, 50)
EXPERIMENTS = ("main", "mixing", "noise")


def stable_seed(*parts: int | str) -> list[int]:
    """A numpy seed sequence from ints and names (names hashed with CRC-32: stable across runs)."""
    return [p if isinstance(p, (int, np.integer)) else zlib.crc32(str(p).encode("utf-8")) for p in parts]


@dataclass(frozen=True)
class RunSpec:
    """One training of the study and its two test evaluations."""

    experiment: str            # main | mixing | noise
    dataset: str
    seed: int
    train_domain: str
    other_domain: str
    setting: float | None = None   # mixing: f; noise: alpha; main: None

    @property
    def run_id(self) -> str:
        """The run's name in ``runs.jsonl`` and the tables.

        >>> RunSpec("mixing", "MRI-Breast", 3, "GE", "SIEMENS", 0.2).run_id
        'mixing/MRI-Breast/seed3/train=GE/m=0.2'
        """
        s = "" if self.setting is None else f"/{self.experiment[0]}={self.setting:g}"
        return f"{self.experiment}/{self.dataset}/seed{self.seed}/train={self.train_domain}{s}"

    def to_dict(self) -> dict:
        """The spec's fields and run id (the first columns of a run record)."""
        return {"run_id": self.run_id, "experiment": self.experiment, "dataset": self.dataset, "seed": self.seed,
                "train_domain": self.train_domain, "other_domain": self.other_domain, "setting": self.setting}


def split_domain(patient_labels: pd.Series, seed: int, fractions: Sequence[float] = PAPER_FRACTIONS,
                 stratify: bool = False, key: Sequence[int | str] = ()) -> dict[str, str]:
    """Assign each patient (index of ``patient_labels``) to train / val / test.

    The split sizes are exactly :func:`mridomain.data.splits.split_counts` of the patient count
    (each within one patient of ``fraction * n``). By default the order is plain random, as in the
    paper. With ``stratify`` the patients of each label
    stratum (the value of ``patient_labels``: a patient's label, or "mixed") are spread evenly over
    the random order before it is cut, so every split gets its share of positives: the paper's
    random split, made less likely to leave a small test set with one class.

    >>> import pandas as pd
    >>> labels = pd.Series([0, 1] * 6, index=[f"p{i:02d}" for i in range(12)])
    >>> split = split_domain(labels, seed=0, stratify=True)
    >>> sorted(split.values()).count("train"), sorted(split.values()).count("test")   # 2/3 and 1/6 of 12
    (8, 2)
    >>> sorted(labels[[p for p, s in split.items() if s == "test"]])                 # one of each class
    [0, 1]
    >>> split == split_domain(labels, seed=0, stratify=True)                          # a pure function of the seed
    True
    """
    fr = check_fractions(fractions)
    patients = sorted(str(p) for p in patient_labels.index)
    strata = patient_labels.rename(index=str).reindex(patients).astype(str).to_numpy()
    rng = np.random.default_rng(stable_seed(seed, *key))
    n = len(patients)
    names = ("train", "val", "test")
    out = {}
    if not stratify:
        n_train, n_val, _ = split_counts(n, fr)
        for rank, i in enumerate(rng.permutation(n)):
            out[patients[i]] = names[0] if rank < n_train else names[1] if rank < n_train + n_val else names[2]
        return out
    members = {s: np.flatnonzero(strata == s) for s in sorted(set(strata))}
    alloc = _stratum_counts({s: len(m) for s, m in members.items()}, fr, split_counts(n, fr))
    for s, idx in members.items():
        order = rng.permutation(idx)
        bounds = np.cumsum(alloc[s])
        for rank, i in enumerate(order):
            out[patients[i]] = names[int(np.searchsorted(bounds, rank, side="right"))]
    return out


def _stratum_counts(sizes: dict[str, int], fractions: Sequence[float], target: Sequence[int]) -> dict[str, list[int]]:
    """Patients of each stratum per split: its own ``split_counts`` share, at least one per split
    for a stratum of three or more (so a rare class reaches every split), then patients moved one
    at a time, from the largest strata first, until the split totals are exactly ``target``."""
    alloc = {s: list(split_counts(m, fractions)) for s, m in sizes.items()}
    floor = {s: 1 if m >= 3 else 0 for s, m in sizes.items()}
    for s in sizes:
        for k in (1, 2):
            while alloc[s][k] < floor[s]:
                alloc[s][int(np.argmax(alloc[s]))] -= 1
                alloc[s][k] += 1
    by_size = sorted(sizes, key=lambda s: (-sizes[s], s))
    for relaxed in (False, True):        # keep every split's rare-class floor when the totals allow
        excess = [sum(a[k] for a in alloc.values()) - int(target[k]) for k in range(3)]
        while any(excess):
            k, j = int(np.argmax(excess)), int(np.argmin(excess))
            donor = next((s for s in by_size if alloc[s][k] > (0 if relaxed else floor[s])), None)
            if donor is None:
                break
            alloc[donor][k] -= 1
            alloc[donor][j] += 1
            excess[k] -= 1
            excess[j] += 1
        if not any(excess):
            break
    return alloc


def _patient_strata(table: pd.DataFrame) -> pd.Series:
    """Per patient: its label when all its samples agree, else 'mixed'."""
    g = table.groupby("patient_id")["label"]
    lo, hi = g.min(), g.max()
    return pd.Series(np.where(lo == hi, lo.astype(str), "mixed"), index=lo.index)


def study_splits(table: pd.DataFrame, dataset: str, seed: int, fractions: Sequence[float] = PAPER_FRACTIONS,
                 stratify: bool = False) -> np.ndarray:
    """The split ("train" / "val" / "test") of every row of ``table`` (one dataset) for ``seed``.

    A ``split`` column in the manifest is used as it is (the same split for every seed). Domains
    are split independently: the split of one domain does not depend on the other's patients.
    """
    if "split" in table.columns:
        return table["split"].to_numpy(dtype=object)
    out = np.empty(len(table), dtype=object)
    for dom, g in table.groupby("domain", sort=True):
        assign = split_domain(_patient_strata(g), seed, fractions, stratify, key=("split", dataset, dom))
        out[g.index.to_numpy()] = [assign[str(p)] for p in g["patient_id"]]
    return out


def check_splits(table: pd.DataFrame, dataset: str, seeds: Iterable[int], fractions: Sequence[float] = PAPER_FRACTIONS,
                 stratify: bool = False, where: str = "manifest") -> None:
    """One-line :class:`ManifestError` when any split of any domain and seed lacks a class, or a
    patient appears in two splits of a fixed ``split`` column (AUC needs both labels)."""
    if "split" in table.columns:
        per_patient = table.groupby(["domain", "patient_id"])["split"].nunique()
        if (per_patient > 1).any():
            dom, pid = per_patient[per_patient > 1].index[0]
            raise ManifestError(f"{where}: dataset {dataset!r}, domain {dom!r}: patient {pid} is in more than "
                                "one split (splits are by patient)")
    for seed in seeds:
        splits = study_splits(table, dataset, seed, fractions, stratify)
        for dom, g in table.groupby("domain", sort=True):
            for name in ("train", "val", "test"):
                labels = g["label"].to_numpy()[splits[g.index.to_numpy()] == name]
                present = sorted(set(labels.tolist()))
                if len(present) < 2:
                    what = "no samples" if not present else f"only label {present[0]}"
                    fixed = "split" in table.columns
                    origin = "the manifest's split column" if fixed else f"seed {seed}"
                    fix = ("fix the split column" if fixed else "add patients, split with stratify=True (--stratify) "
                                                                "or give a split column")
                    raise ManifestError(f"{where}: dataset {dataset!r}, domain {dom!r}, split {name} "
                                        f"({origin}): {what} (AUC needs both labels; {fix})")


def mixing_indices(source_train: np.ndarray, target_train: np.ndarray, fraction: float, seed: int,
                   key: Sequence[int | str] = ()) -> tuple[np.ndarray, int]:
    """Appendix A.1: the source training set plus target training samples making up ``fraction``.

    ``n_target = round(f / (1 - f) * n_source)`` target samples are added, so that they are the
    fraction f of the mixed set. They are drawn without replacement while the target training set
    lasts; past that, samples are duplicated: each target sample then appears ``n_target // M`` or
    one more times (M target samples). Returns (indices of the mixed set, number of duplicates).

    >>> import numpy as np
    >>> mixed, dup = mixing_indices(np.arange(8), np.arange(100, 103), 0.5, seed=0)   # f = 0.5: 8 target samples
    >>> len(mixed), dup, sorted(np.bincount(mixed[8:] - 100).tolist())                # from 3: each 2 or 3 times
    (16, 5, [2, 3, 3])
    """
    if not 0.0 <= fraction < 1.0:
        raise ManifestError(f"mixing fraction {fraction}: must be in [0, 1)")
    src = np.asarray(source_train, dtype=np.int64)
    tgt = np.asarray(target_train, dtype=np.int64)
    n_target = int(round(fraction / (1.0 - fraction) * len(src)))
    if n_target == 0:
        return src.copy(), 0
    if len(tgt) == 0:
        raise ManifestError("mixing: the target domain has no training samples")
    rng = np.random.default_rng(stable_seed(seed, "mixing", *key, int(round(fraction * 1e6))))
    full, rest = divmod(n_target, len(tgt))
    picked = [tgt] * full + [rng.choice(tgt, size=rest, replace=False)]
    mixed_target = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    return np.concatenate([src, mixed_target]), max(0, n_target - len(tgt))


def add_noise(images: np.ndarray, alpha: float, seed: int, key: Sequence[int | str] = ()) -> np.ndarray:
    """Appendix A.2: ``x + alpha * eps``, eps ~ N(0, I), one draw per training image, in the
    samples' stored intensity units (before the per-image z-score the model applies)."""
    rng = np.random.default_rng(stable_seed(seed, "noise", *key, int(round(float(alpha) * 1e6))))
    x = np.asarray(images, dtype=np.float32)
    return x + np.float32(alpha) * rng.standard_normal(x.shape, dtype=np.float32)


def check_settings(experiment: str, settings: Sequence[float] | None) -> None:
    """One-line :class:`ManifestError` for settings an experiment cannot run (checked before any
    work): mixing fractions in [0, 1), noise alphas finite and >= 0, at least one of them."""
    import math

    if experiment == "main" or settings is None:
        return
    values = [float(s) for s in settings]
    if not values:
        raise ManifestError(f"experiment {experiment}: no settings to run")
    for v in values:
        if not math.isfinite(v):
            raise ManifestError(f"{experiment} setting {v}: must be a finite number")
        if experiment == "mixing" and not 0.0 <= v < 1.0:
            raise ManifestError(f"mixing fraction {v}: must be in [0, 1) (the share of target-domain samples)")
        if experiment == "noise" and v < 0:
            raise ManifestError(f"noise alpha {v}: must be >= 0 (a standard deviation)")


def plan_runs(experiment: str, datasets: dict[str, tuple[str, str]], seeds: Iterable[int],
              settings: Sequence[float] | None = None) -> list[RunSpec]:
    """Every run of one experiment: seeds x datasets x training domains (x settings)."""
    if experiment not in EXPERIMENTS:
        raise ManifestError(f"experiment {experiment!r}: choose {', '.join(EXPERIMENTS)}")
    values: list[float | None] = [None] if experiment == "main" else [float(s) for s in (settings or ())]
    if not values:
        raise ManifestError(f"experiment {experiment}: no settings to run")
    runs = []
    for seed in seeds:
        for ds, (d1, d2) in datasets.items():
            for train, other in ((d1, d2), (d2, d1)):
                for v in values:
                    runs.append(RunSpec(experiment, ds, int(seed), train, other, v))
    return runs
