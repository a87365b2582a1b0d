"""Imaging-differentiation maps (eq. 5) and their check against the simulator's known regions.

``M_d(X_i) = (1/S) sum_j |X'_{j->i} - X_i|``: where no other sequence can explain X_i, the map is
bright. As eq. 5 is printed and as the authors' ``pred_brats_seq2seq_2d_md.py`` computes it, j runs
over all sequences, the self-translation X'_{i->i} included (``include_self=True``, the default); the
mean is over the subject's available sources (S when all are there). ``include_self=False`` averages
only the translations from the other sequences (the text's "generated from the remaining sequences").

``match_gain=True`` (not in the paper) first scales each generated volume by the one gain that best
fits it to ``X_i`` in least squares (``contribution.least_squares_gain``), so that a wrong global
intensity scale does not light up the whole brain. Every volume is scaled to [0, 1] by its own
intensity percentiles, and in T1Gd the enhancement can set them, which no other sequence shows: the
scale is one number per volume that no generator can know, where the map is meant to show *where*
X_i holds what the others cannot explain. The evaluation scores both forms (``auc`` and
``auc_gain_matched`` of the M_d check); the maps it writes are eq. 5's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mridomain.errors import InvalidArgumentError
from mridomain.synth.contribution import least_squares_gain
from mridomain.synth.data import Subject

__all__ = ["differentiation_map", "subject_dmaps", "write_dmaps", "overlay_figure", "region_masks",
           "dmap_auc_rows", "summarize_dmap_check", "DMAP_CHECKS"]


def differentiation_map(target: np.ndarray, generated: Sequence[np.ndarray], match_gain: bool = False
                        ) -> np.ndarray:
    """Eq. 5: the mean absolute difference between ``target`` and each generated version of it; with
    ``match_gain``, each generated version first scaled by its least-squares gain to ``target``."""
    if not len(generated):
        raise InvalidArgumentError("differentiation_map needs at least one generated image")
    target = np.asarray(target, dtype=np.float32)
    for g in generated:
        if np.shape(g) != target.shape:
            raise InvalidArgumentError(f"generated shape {np.shape(g)} differs from the target's {target.shape}")
    gains = [least_squares_gain(g, target) if match_gain else 1.0 for g in generated]
    return np.mean([np.abs(np.float32(k) * np.asarray(g, np.float32) - target) for k, g in zip(gains, generated)],
                   axis=0)


def subject_dmaps(subject: Subject, translations: dict[tuple[str, str], np.ndarray],
                  include_self: bool = True, match_gain: bool = False) -> dict[str, np.ndarray]:
    """``{sequence: (S, H, W)}`` M_d of every available sequence of one subject (a 4-D sequence's
    map is averaged over its time points). ``translations`` is :meth:`SynthRun.translate_all`'s
    (made with ``include_self=True`` for the published form); ``match_gain`` as in
    :func:`differentiation_map`."""
    maps = {}
    for tgt in subject.available:
        gens = [v for (src, t), v in translations.items() if t == tgt and (src != tgt or include_self)]
        if gens:
            maps[tgt] = differentiation_map(subject.volumes[tgt], gens, match_gain).mean(axis=0)
    return maps


def _lesion_slice(subject: Subject) -> int:
    for labels in (subject.truth, subject.seg):
        if labels is not None and (labels >= (4 if labels is subject.truth else 1)).any():
            lesion = labels >= 4 if labels is subject.truth else labels > 0
            return int(np.argmax(lesion.sum(axis=(1, 2))))
    return subject.shape[0] // 2


def overlay_figure(subject: Subject, maps: dict[str, np.ndarray], z: int | None = None, vmax: float | None = None):
    """Figs. 3/5/6 style: each sequence (top) and its M_d as a heat map over it (bottom)."""
    from matplotlib.figure import Figure

    z = _lesion_slice(subject) if z is None else z
    seqs = [s for s in subject.available if s in maps]
    fig = Figure(figsize=(2.6 * len(seqs), 5.4))
    axes = fig.subplots(2, len(seqs), squeeze=False)
    top = vmax or max(float(np.percentile(maps[s][z], 99.5)) for s in seqs) or 1.0
    for c, s in enumerate(seqs):
        img = subject.volumes[s][0, z]
        axes[0, c].imshow(img, cmap="gray", vmin=0, vmax=1, origin="lower")
        axes[0, c].set_title(s)
        axes[1, c].imshow(img, cmap="gray", vmin=0, vmax=1, origin="lower")
        im = axes[1, c].imshow(np.ma.masked_less(maps[s][z], 0.02 * top), cmap="jet", alpha=0.6,
                               vmin=0, vmax=top, origin="lower")
        axes[1, c].set_title(f"M_d({s})")
        for r in range(2):
            axes[r, c].axis("off")
    fig.colorbar(im, ax=list(axes[1]), fraction=0.02, label="mean |X' - X|")
    fig.suptitle(f"{subject.subject_id}, slice {z}")
    return fig


def write_dmaps(subject: Subject, maps: dict[str, np.ndarray], out: str | Path, name: str = "dmap") -> list[Path]:
    """``<id>_<seq>_<name>.nii.gz`` on the subject's grid (same affine as its inputs) and
    ``<id>_<name>.png`` (the overlay figure); returns the files written."""
    from mridomain.sim.brain.nifti import write_like_image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if subject.affine is None:
        raise InvalidArgumentError(f"{subject.subject_id}: no affine to write NIfTI maps on")
    paths = [write_like_image(out / f"{subject.subject_id}_{s}_{name}.nii.gz", m, subject.affine)
             for s, m in maps.items()]
    png = out / f"{subject.subject_id}_{name}.png"
    overlay_figure(subject, maps).savefig(png, dpi=90)
    return paths + [png]


# -- the check against ground truth -------------------------------------------------------------------
#: (map, region, what it tests): M_d of the first sequence should single out the region
DMAP_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("t1ce", "enhancing", "enhancing rim is bright only on T1Gd"),
    ("flair", "edema", "edema (FLAIR)"),
    ("flair", "csf_border", "CSF-adjacent voxels (bright on T2, nulled on FLAIR)"),
    ("t1", "enhancing", "control: T1 has nothing unique in the rim"),
    ("t2", "edema", "control: edema is shared by T2 and FLAIR"),
    ("pair:t2->flair", "edema", "what T2 alone cannot explain of FLAIR, in edema"),
    ("pair:t2->flair", "csf_border", "what T2 alone cannot explain of FLAIR, next to CSF"),
)


def region_masks(truth: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean region masks from the simulator's truth labels (TRUTH_LABELS), plus ``brain``."""
    from scipy import ndimage

    from mridomain.sim.brain.anatomy import TRUTH_LABELS

    brain = truth > 0
    csf = truth == TRUTH_LABELS["csf"]
    border = ndimage.binary_dilation(csf, iterations=1) & brain & ~csf
    return {"brain": brain, "csf": csf, "csf_border": border,
            **{name: truth == TRUTH_LABELS[name] for name in ("edema", "enhancing", "necrosis")}}


def dmap_auc_rows(subject: Subject, maps: dict[str, np.ndarray],
                  translations: dict[tuple[str, str], np.ndarray],
                  gain_matched_maps: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Per check, this subject's voxel scores and labels summarized for pooling: returns rows with
    the arrays needed (scores in the region and in the rest of the brain; with ``gain_matched_maps``,
    :func:`subject_dmaps` with ``match_gain``, also theirs as ``gm_pos`` / ``gm_neg``)."""
    if subject.truth is None:
        return []
    regions = region_masks(subject.truth)
    rows = []
    for source, region, _ in DMAP_CHECKS:
        matched = None
        if source.startswith("pair:"):
            src, tgt = source[5:].split("->")
            if (src, tgt) not in translations:
                continue
            score = differentiation_map(subject.volumes[tgt], [translations[(src, tgt)]]).mean(axis=0)
            if gain_matched_maps is not None:
                matched = differentiation_map(subject.volumes[tgt], [translations[(src, tgt)]],
                                             match_gain=True).mean(axis=0)
        elif source in maps:
            tgt, score = source, maps[source]
            matched = None if gain_matched_maps is None else gain_matched_maps.get(source)
        else:
            continue
        # the target's own brightness: a map that only echoes how bright X_i is scores this AUC too
        intensity = subject.volumes[tgt].mean(axis=0)
        pos = regions[region] & regions["brain"]
        neg = regions["brain"] & ~regions[region]
        if pos.any() and neg.any():
            rows.append({"subject": subject.subject_id, "map": source, "region": region,
                         "pos": score[pos].astype(np.float32), "neg": score[neg].astype(np.float32),
                         "base_pos": intensity[pos].astype(np.float32),
                         "base_neg": intensity[neg].astype(np.float32),
                         **({} if matched is None else {"gm_pos": matched[pos].astype(np.float32),
                                                        "gm_neg": matched[neg].astype(np.float32)})})
    return rows


def _pooled_auc(pos: list[np.ndarray], neg: list[np.ndarray]) -> float:
    from sklearn.metrics import roc_auc_score

    p, n = np.concatenate(pos), np.concatenate(neg)
    return float(roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p, n]))


def summarize_dmap_check(rows: list[dict]) -> pd.DataFrame:
    """ROC AUC of each check, pooled over subjects' voxels and per subject (mean, std), beside the
    AUC of the target image's own intensity (what a map that merely echoes brightness would score)
    and, where the rows carry them, the pooled AUC of the gain-matched map (``auc_gain_matched``, NaN
    otherwise)."""
    from sklearn.metrics import roc_auc_score

    out = []
    keys = list(dict.fromkeys((r["map"], r["region"]) for r in rows))
    what = {(m, r): w for m, r, w in DMAP_CHECKS}
    for key in keys:
        sel = [r for r in rows if (r["map"], r["region"]) == key]
        per = [roc_auc_score(np.r_[np.ones(len(r["pos"])), np.zeros(len(r["neg"]))], np.r_[r["pos"], r["neg"]])
               for r in sel]
        pooled = _pooled_auc([r["pos"] for r in sel], [r["neg"] for r in sel])
        baseline = _pooled_auc([r["base_pos"] for r in sel], [r["base_neg"] for r in sel])
        matched = (_pooled_auc([r["gm_pos"] for r in sel], [r["gm_neg"] for r in sel])
                   if all("gm_pos" in r for r in sel) else np.nan)
        out.append({"map": key[0], "region": key[1], "auc": pooled, "auc_subject_mean": float(np.mean(per)),
                    "auc_subject_std": float(np.std(per)), "auc_target_intensity": baseline,
                    "auc_gain_matched": matched,
                    "subjects": len(sel), "region_voxels": int(sum(len(r["pos"]) for r in sel)),
                    "what": what.get(key, "")})
    return pd.DataFrame(out)
