"""Sequence contribution (eq. 4): the adjacency A_ij and the degree centralities C_t and C_d.

``A_ij = nPSNR_ij + nSSIM_ij - nLPIPS_ij`` scores how well sequence i generates sequence j (LPIPS only
when it was measured; without it the two-term form, and the output says so). The paper's Table 2
values (C_t of -2.72, C_d of 2.74) lie outside what min-max normalized metrics allow ([-1, 2]), and
the authors' code z-scores every metric over all (subject, source, target) rows; ``zscore`` (the
default) does that, ``minmax`` scales the pair means to [0, 1] over the pairs.

``C_t(i) = (1/S) sum_j A_ij`` (totipotency: how well i generates the others) and
``C_d(i) = -(1/S) sum_j A_ji`` (imaging differentiation: how hard i is to generate); rank 1 is the
highest value. As eq. 4 is printed and as the authors' ``cal_brats_seq2seq_2d_contribution.py``
computes it, j runs over *all* sequences: the self-translations i -> i are in the z-score pool and
in the sums (``include_self=True``, the default). ``include_self=False`` drops them from both (the
"generated from the other sequences" reading); the two forms can rank sequences differently, because
a sequence the model cannot even reproduce from itself gains C_d only in the published form.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from mridomain.errors import EmptyInputError, InvalidArgumentError

__all__ = ["image_metrics", "least_squares_gain", "gain_matched_psnr", "adjacency", "centrality", "contribution_table", "plot_contribution"]


def image_metrics(generated: np.ndarray, target: np.ndarray, lpips: Any = None) -> dict[str, float]:
    """PSNR over the volume and SSIM averaged over its slices (torchmetrics, data range 1), and
    LPIPS averaged over slices when an LPIPS model is given. Arrays are ``(..., H, W)`` in [0, 1]. The
    metrics A_ij is built from: Table 1 scores the generator with them, and the oracle its own predictions."""
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    g = torch.from_numpy(np.ascontiguousarray(generated, dtype=np.float32)).reshape(-1, 1, *generated.shape[-2:])
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)).reshape(-1, 1, *target.shape[-2:])
    out = {"psnr": float(peak_signal_noise_ratio(g, t, data_range=1.0)),
           "ssim": float(structural_similarity_index_measure(g, t, data_range=1.0))}
    if lpips is not None:
        from mridomain.synth.model import to_model_range

        with torch.no_grad():
            out["lpips"] = float(lpips(to_model_range(g), to_model_range(t)).mean())
    return out


def least_squares_gain(generated: np.ndarray, target: np.ndarray) -> float:
    """The one gain ``g`` that minimizes ``|g x generated - target|^2`` (1 for an all-zero ``generated``).

    >>> least_squares_gain(np.array([1.0, 2.0]), np.array([2.0, 4.0]))
    2.0
    """
    x = np.asarray(generated, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    energy = float(x @ x)
    return float(x @ t) / energy if energy > 0 else 1.0


def gain_matched_psnr(generated: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """``(gain, PSNR)``: the one gain ``g`` that brings ``generated`` closest to ``target`` in least
    squares, and the PSNR (data range 1, as Table 1's) of ``g x generated`` against ``target``.

    Every volume is scaled to [0, 1] by its own intensity percentiles, so a target's grey levels can
    hinge on something the sources do not show (in T1Gd, the enhancement can set the upper
    percentile). The gap between this PSNR and the plain one is what a wrong global intensity scale
    costs; what remains is structure. It never falls below the plain PSNR (``g = 1`` is a candidate).

    >>> t = np.array([0.0, 1.0, 0.0, 1.0])
    >>> gain_matched_psnr(0.5 * t, t)
    (2.0, inf)
    """
    x = np.asarray(generated, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    gain = least_squares_gain(x, t)
    mse = float(np.mean((gain * x - t) ** 2))
    return gain, (float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse)))


def _normalized_pair_means(rows: pd.DataFrame, metric: str, normalization: str) -> pd.Series:
    values = rows[metric].astype(float)
    means = rows.assign(_v=values).groupby(["source", "target"])["_v"].mean()
    if normalization == "zscore":
        std = float(values.std(ddof=0))
        return (means - float(values.mean())) / (std + 1e-9)
    lo, hi = float(means.min()), float(means.max())
    return (means - lo) / ((hi - lo) or 1.0)


def adjacency(rows: pd.DataFrame, sequences: Sequence[str],
              normalization: Literal["zscore", "minmax"] = "zscore",
              include_self: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """``A`` (sources as rows, targets as columns) from per-subject metric rows with columns
    ``source, target, psnr, ssim`` and optionally ``lpips``; also the terms used. The diagonal holds
    the self-translations when the rows have them and ``include_self``; else it is NaN and the
    self rows stay out of the normalization too."""
    if normalization not in ("zscore", "minmax"):
        raise InvalidArgumentError(f"normalization must be 'zscore' or 'minmax', got {normalization!r}")
    if not include_self:
        rows = rows[rows["source"] != rows["target"]]
    if not (rows["source"] != rows["target"]).any():
        raise EmptyInputError("pairs", "no source -> target metrics (i != j) to build the adjacency from")
    terms = [("psnr", 1.0), ("ssim", 1.0)]
    if "lpips" in rows and rows["lpips"].notna().any():
        terms.append(("lpips", -1.0))
    total = sum(sign * _normalized_pair_means(rows, m, normalization) for m, sign in terms)
    a = pd.DataFrame(np.nan, index=list(sequences), columns=list(sequences))
    for (src, tgt), v in total.items():
        a.loc[src, tgt] = float(v)
    a.index.name, a.columns.name = "source", "target"
    return a, [m for m, _ in terms]


def centrality(a: pd.DataFrame) -> pd.DataFrame:
    """C_t (row sums) and C_d (negated column sums) of an adjacency, divided by S (eq. 4). Every
    finite entry counts, the diagonal included; an unmeasured pair (NaN) adds nothing.

    >>> a = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=["T1", "T2"], columns=["T1", "T2"])
    >>> centrality(a)[["sequence", "c_t", "c_d"]].to_dict("list")
    {'sequence': ['T1', 'T2'], 'c_t': [1.5, 3.5], 'c_d': [-2.0, -3.0]}"""
    s = len(a)
    values = a.to_numpy(dtype=float)
    filled = np.where(np.isfinite(values), values, 0.0)
    c_t = filled.sum(axis=1) / s
    c_d = -filled.sum(axis=0) / s
    out = pd.DataFrame({"sequence": list(a.index), "c_t": c_t, "c_d": c_d})
    out["rank_t"] = out["c_t"].rank(ascending=False, method="min").astype(int)
    out["rank_d"] = out["c_d"].rank(ascending=False, method="min").astype(int)
    return out


def contribution_table(rows: pd.DataFrame, sequences: Sequence[str],
                       normalization: Literal["zscore", "minmax"] = "zscore", include_self: bool = True
                       ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """``(table, adjacency, note)``: Table 2 columns ``sequence, c_t, c_d, rank_t, rank_d``."""
    a, terms = adjacency(rows, sequences, normalization, include_self)
    form = " + ".join(f"n{t.upper()}" if t != "lpips" else "- nLPIPS" for t in terms).replace("+ -", "-")
    has_self = bool((rows["source"] == rows["target"]).any())
    if include_self and has_self:
        diagonal = "diagonal i = j included, as eq. 4 and the authors' code"
    elif include_self:
        diagonal = "no self-translation rows were measured: diagonal absent"
    else:
        diagonal = "diagonal i = j excluded"
    note = (f"A_ij = {form} ({normalization} normalization; {diagonal}"
            + ("" if "lpips" in terms else "; LPIPS not measured: the two-term form") + ")")
    return centrality(a), a, note


def plot_contribution(a: pd.DataFrame, table: pd.DataFrame, title: str = ""):
    """Heat map of A_ij and bars of C_t / C_d (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    im = ax1.imshow(a.to_numpy(dtype=float), cmap="viridis")
    ax1.set_xticks(range(len(a.columns)), a.columns)
    ax1.set_yticks(range(len(a.index)), a.index)
    ax1.set(xlabel="target j", ylabel="source i", title="A_ij (higher: easier to generate)")
    for r in range(len(a)):
        for c in range(len(a)):
            v = a.iat[r, c]
            if np.isfinite(v):
                ax1.text(c, r, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax1, fraction=0.046)
    x = np.arange(len(table))
    ax2.bar(x - 0.2, table["c_t"], 0.4, label="C_t (totipotency)")
    ax2.bar(x + 0.2, table["c_d"], 0.4, label="C_d (imaging differentiation)")
    ax2.set_xticks(x, table["sequence"])
    ax2.axhline(0, color="k", linewidth=0.6)
    ax2.legend(fontsize=8)
    ax2.set_title(title or "Degree centrality (eq. 4)")
    fig.tight_layout()
    return fig
