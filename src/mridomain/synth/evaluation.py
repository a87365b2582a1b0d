"""Table 1 (PSNR / SSIM / LPIPS per source -> target pair), Table 2 (C_t, C_d) and the M_d check.

One pass over the held-out subjects translates every available sequence into every other; the
same translations give the metrics, the adjacency of eq. 4 and the maps of eq. 5, so the three
reports describe the same generated images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from mridomain.progress import progress_bar

from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError
from mridomain.synth.contribution import contribution_table, gain_matched_psnr, image_metrics, plot_contribution
from mridomain.synth.data import SynthData, load_dataset
from mridomain.synth.differentiation import (dmap_auc_rows, overlay_figure, subject_dmaps, summarize_dmap_check,
                                             write_dmaps)
from mridomain.synth.model import SynthRun, load_run
from mridomain.synth.network import profile_config, profile_generator

if TYPE_CHECKING:
    from mridomain.synth.oracle import OracleResult

__all__ = ["SynthEvaluation", "evaluate", "rank_sequences", "image_metrics", "pair_summary", "model_profiles",
           "evaluation_subjects"]


#: the per-(subject, pair) metrics that Table 1 and the overall line average (eq. 4 reads psnr, ssim
#: and lpips only)
TABLE1_METRICS = ("psnr", "ssim", "lpips", "psnr_gain_matched")


def pair_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std per (source, target) of the per-subject metric rows (Table 1 per pair)."""
    metrics = [m for m in TABLE1_METRICS if m in rows and rows[m].notna().any()]
    g = rows.groupby(["source", "target"], sort=False)[metrics]
    out = g.mean()
    std = g.std(ddof=0).add_suffix("_std")
    res = pd.concat([out, std], axis=1).reset_index()
    res["subjects"] = g.size().to_numpy()
    return res


def model_profiles(run: SynthRun) -> pd.DataFrame:
    """Parameters and GMACs of this run's generator (at its training size) and of the paper preset
    (BraTS 2.5-D 192 x 192, as Table 1), counted in full and as the paper's THOP profile counts."""
    from mridomain.synth.config import make_config

    size = tuple(run.schema.get("training_size") or (192, 192))
    rows = []
    for label, prof, _spatial in (
            (f"this run ({run.config.network.mode}, input {'x'.join(map(str, size))})",
             profile_generator(run.generator, size), size),
            ("paper preset (2.5-D, 192x192)", profile_config(make_config("paper").network, (192, 192)), (192, 192))):
        rows.append({"model": label, "params_M": round(prof["params_m"], 3),
                     "params_M_paper_count": round(prof["params_leaf_m"], 3), "GMACs": round(prof["gmacs"], 3),
                     "GMACs_paper_count": round(prof["gmacs_modules"], 3)})
    return pd.DataFrame(rows)


def evaluation_subjects(run: SynthRun, data: SynthData, split: str) -> SynthData:
    """The run's ``split`` subjects present in ``data`` (``all``: every subject of ``data``)."""
    if split == "all":
        return data
    if split not in ("train", "val", "test"):
        raise InvalidArgumentError(f"split must be train, val, test or all, got {split!r}")
    ids = run.schema.get("splits", {}).get(split, [])
    chosen = data.subset(ids)
    if not len(chosen):
        raise EmptyInputError(data.root or Path("."), f"none of the run's {len(ids)} {split} subjects is in "
                                                     "this data (use split='all' for new data)")
    return chosen


@dataclass
class SynthEvaluation:
    """What :func:`evaluate` measured and wrote to ``out``."""

    out: Path
    rows: pd.DataFrame          # one row per (subject, source, target)
    pairs: pd.DataFrame         # Table 1 per pair (mean, std)
    overall: dict[str, float]
    contribution: pd.DataFrame  # Table 2
    adjacency: pd.DataFrame
    contribution_note: str
    dmap_check: pd.DataFrame | None
    profiles: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    dmap_files: list[Path] = field(default_factory=list)
    oracle: pd.DataFrame | None = None     # learned C_d next to the simulator oracle's unexplained fractions
    oracle_summary: dict = field(default_factory=dict)

    def to_markdown(self) -> str:
        """The evaluation as Markdown: Table 1 per pair, the overall means, Table 2, the M_d check, the
        simulator oracle's comparison (when measured), the model profile and the notes."""
        from mridomain.report import df_to_markdown

        parts = ["Table 1 (per source -> target pair, mean over subjects):", df_to_markdown(self.pairs.round(4)),
                 "Overall: " + ", ".join(f"{k} {v:.4f}" for k, v in self.overall.items()),
                 "(psnr_gain_matched: the PSNR after one least-squares gain per generated volume, so the "
                 "gap to psnr is what a wrong global intensity scale costs; each volume is scaled by its "
                 "own percentiles, which in T1Gd the enhancement can set)",
                 "", f"Table 2 ({self.contribution_note}):", df_to_markdown(self.contribution.round(3))]
        if self.dmap_check is not None and len(self.dmap_check):
            parts += ["", "M_d check (ROC AUC, voxels pooled over subjects):",
                      df_to_markdown(self.dmap_check[["map", "region", "auc", "auc_subject_mean",
                                                      "auc_target_intensity", "auc_gain_matched", "subjects"]
                                                     + [c for c in self.dmap_check if c.startswith("auc_oracle")]
                                                     ].round(3))]
        if self.oracle is not None:
            parts += ["", "The simulator's known answer (oracle: unexplained fraction of each sequence given the "
                          "others, 3x3x3 neighbourhoods, gradient boosting; PSNR it reaches):",
                      df_to_markdown(self.oracle.round(3))]
            for kind, s in self.oracle_summary.items():
                parts.append(f"{kind} oracle order {s['oracle_order']}; learned C_d top {s['learned_top']}, "
                             f"oracle top {s['oracle_top']} -> {'match' if s['top_matches'] else 'NO match'}; "
                             f"Spearman rho (C_d vs {'its C_d' if kind.endswith('eq. 4') else 'unexplained'}) "
                             f"{s['spearman']:.2f}")
            if any(k.endswith("eq. 4") for k in self.oracle_summary):
                parts.append("(pairwise eq. 4: the pairwise oracle's own translations ranked by eq. 4 as the "
                             "generator's are, without the diagonal: the C_d of a generator as good as the oracle)")
        parts += ["", "Model profile:", df_to_markdown(self.profiles)] + [f"note: {n}" for n in self.notes]
        return "\n".join(parts)


def oracle_pairs(pairs: pd.DataFrame, oracle_table: pd.DataFrame) -> pd.DataFrame:
    """The generator's per-pair PSNR next to the pairwise oracle's (``OracleResult.pairs``; ``psnr_gap``:
    how far the generator is from a voxel-wise predictor given the same single source)."""
    oracle = oracle_table.rename(columns={"psnr": "psnr_oracle", "unexplained": "unexplained_oracle"})
    out = pairs[["source", "target", "psnr"]].merge(oracle, on=["source", "target"], how="inner")
    out["psnr_gap"] = out["psnr_oracle"] - out["psnr"]
    return out


def evaluate(run: str | Path | SynthRun, data: str | Path | SynthData | None = None, split: str = "test",
             out: str | Path | None = None, lpips_weights: str | Path | None = None,
             lpips_lin: str | Path | None = None, device: str | None = None, progress: bool = True,
             normalization: str = "zscore", max_subjects: int | None = None, html: bool = True,
             dmap_dir: str | Path | None = None, dmap_subjects: int = 1,
             include_self: bool = True, oracle: bool = True,
             oracles: dict[str, OracleResult] | None = None) -> SynthEvaluation:
    """Evaluate a run on held-out subjects (Python twin of ``mridomain synth evaluate``).

    Writes to ``out`` (default ``RUN/eval_<split>``): ``pairs_subjects.csv``, ``pairs.csv``,
    ``table1.md``, ``contribution.csv``, ``adjacency.csv``, ``contribution.png``, ``dmap_check.csv``
    (subjects with simulator truth only), ``dmap_example.png``, ``metrics.json`` and ``report.html``.
    Metrics of 2-D / 2.5-D runs cover the slices that hold the head (at least 5% of the slice).
    ``dmap_dir``: also write the M_d NIfTI maps and overlay of the first ``dmap_subjects`` subjects.
    ``include_self``: the self-translations i -> i enter C_t / C_d and M_d as eq. 4 and 5 are
    published (they are measured and kept in ``pairs_subjects.csv`` either way when True; Table 1 and
    the overall figures cover the i != j pairs only, the paper's generation task).
    ``oracle``: on simulated subjects (truth maps present) also fit the simulator's known answer
    (:mod:`mridomain.synth.oracle`) on the run's training subjects and report the learned C_d order
    and M_d AUCs next to it (``oracle.csv``; ``oracle_pairs.csv``: every pair's PSNR next to the
    pairwise oracle's, which predicts each target from that one source).
    ``oracles``: those oracles already fitted (:func:`~mridomain.synth.oracle.oracle_for_run` on the
    run's training and these test subjects; the demo fits them while the generator trains).
    """
    from mridomain.engine import write_json_atomic

    r = run if isinstance(run, SynthRun) else load_run(run, device=device)
    if data is None:
        data = r.schema.get("data")
        if not data:
            raise InvalidArgumentError(f"{r.path}: the run does not record its data folder; pass data=")
    dataset = data if isinstance(data, SynthData) else load_dataset(data, r.sequences, allow_missing=True,
                                                                     progress=progress, normalization=r.normalization)
    if dataset.normalization != r.normalization:
        raise SchemaMismatchError(f"{r.path}: the run was trained on {r.normalization['kind']}-normalized volumes, the "
                                  f"data given are {dataset.normalization['kind']}-normalized: pass the data folder")
    subjects = evaluation_subjects(r, dataset, split).subjects[:max_subjects]
    out = Path(out) if out is not None else r.path / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    lpips = None
    if lpips_weights is not None:
        from mridomain.synth.perceptual import LPIPS

        lpips = LPIPS(lpips_weights, lin_weights=lpips_lin)
        if not lpips.calibrated:
            notes.append("LPIPS without its learned layer weights: the uncalibrated baseline distance")
    else:
        notes.append("LPIPS not measured (no backbone weights given): A_ij uses nPSNR + nSSIM")
    if not r.schema.get("perceptual"):
        notes.append("trained without the VGG19 perceptual term (no weights given)")
    rows, check_rows, example, dmap_files = [], [], None, []
    for n, full in enumerate(progress_bar(subjects, desc="evaluate", unit="subject", enabled=progress)):
        # 2-D / 2.5-D runs are scored on the slices that hold the head (as they were trained)
        zs = full.head_slices() if r.config.network.ndims == 2 else np.arange(full.shape[0])
        sub = full.take_slices(zs)
        translations = r.translate_all(full, slices=zs if r.config.network.ndims == 2 else None,
                                       include_self=include_self)
        for (src, tgt), gen in translations.items():
            gain, matched = gain_matched_psnr(gen, sub.volumes[tgt])
            rows.append({"subject": sub.subject_id, "source": src, "target": tgt,
                         **image_metrics(gen, sub.volumes[tgt], lpips), "gain": gain, "psnr_gain_matched": matched})
        maps = subject_dmaps(sub, translations, include_self=include_self)
        check_rows += dmap_auc_rows(sub, maps, translations,
                                    subject_dmaps(sub, translations, include_self=include_self, match_gain=True))
        if example is None and maps:
            example = overlay_figure(sub, maps)
        if dmap_dir is not None and n < dmap_subjects and full.affine is not None:
            whole = {s: np.zeros(full.shape, np.float32) for s in maps}
            for s, m in maps.items():
                whole[s][zs] = m
            dmap_files += write_dmaps(full, whole, dmap_dir)
    if not rows:
        raise EmptyInputError(dataset.root or Path("."), f"no {split} subject with two available sequences")
    table = pd.DataFrame(rows)
    order = {s: k for k, s in enumerate(r.sequences)}
    table = table.sort_values(["subject", "source", "target"],
                              key=lambda c: c.map(order) if c.name != "subject" else c)
    cross = table[table["source"] != table["target"]]
    if cross.empty:
        raise EmptyInputError(dataset.root or Path("."), f"no {split} subject with two available sequences")
    pairs = pair_summary(cross)
    metrics = [m for m in TABLE1_METRICS if m in table]
    overall = {}
    for m in metrics:
        overall[m] = float(cross[m].mean())
        overall[f"{m}_std"] = float(cross[m].std(ddof=0))
    if len(cross) < len(table):
        overall["psnr_self"] = float(table.loc[table["source"] == table["target"], "psnr"].mean())
    contrib, adj, note = contribution_table(table, r.sequences, normalization, include_self)
    check = summarize_dmap_check(check_rows) if check_rows else None
    profiles = model_profiles(r)
    oracle_table, oracle_summary = None, {}
    train_ids = r.schema.get("splits", {}).get("train", [])
    if oracle and check is not None and train_ids and len(dataset.subset(train_ids)):
        from mridomain.synth.oracle import compare_with_oracle, oracle_auc, oracle_for_run

        if oracles is None:
            oracles = oracle_for_run(dataset.subset(train_ids).subjects, subjects, r.sequences,
                                     data_root=dataset.root, progress=progress, normalization=r.normalization)
        for kind, res in oracles.items():
            missing = sorted({s.subject_id for s in subjects} - set(res.maps))
            if missing:
                raise InvalidArgumentError(f"the given {kind} oracle has no maps for the {split} subjects "
                                           f"{missing[:3]}: fit it on this run's subjects")
        oracle_table = compare_with_oracle(contrib, oracles)
        oracle_summary = oracle_table.attrs.pop("summary")
        for kind, res in oracles.items():
            oracle_table[f"psnr_{kind}"] = oracle_table["sequence"].map(res.table.set_index("sequence")["psnr"])
            aucs = oracle_auc(res, subjects, [(m, g) for m, g in zip(check["map"], check["region"])
                                              if not m.startswith("pair:")])
            check[f"auc_oracle_{kind}"] = [aucs.get((m, g), np.nan) for m, g in zip(check["map"], check["region"])]
        oracle_table.to_csv(out / "oracle.csv", index=False)
        if "pairwise" in oracles:
            oracle_pairs(pairs, oracles["pairwise"].pairs).to_csv(out / "oracle_pairs.csv", index=False)

    table.to_csv(out / "pairs_subjects.csv", index=False)
    pairs.to_csv(out / "pairs.csv", index=False)
    contrib.to_csv(out / "contribution.csv", index=False)
    adj.to_csv(out / "adjacency.csv")
    plot_contribution(adj, contrib).savefig(out / "contribution.png", dpi=90)
    if example is not None:
        example.savefig(out / "dmap_example.png", dpi=90)
    if check is not None:
        check.to_csv(out / "dmap_check.csv", index=False)
    result = SynthEvaluation(out, table, pairs, overall, contrib, adj, note, check, profiles, notes, dmap_files,
                             oracle_table, oracle_summary)
    (out / "table1.md").write_text(result.to_markdown() + "\n")
    write_json_atomic(out / "metrics.json", {
        "run": str(r.path), "split": split, "subjects": len(subjects), "overall": overall,
        "pairs": pairs.to_dict("records"), "contribution": contrib.to_dict("records"),
        "contribution_note": note, "dmap_check": None if check is None else check.to_dict("records"),
        "profiles": profiles.to_dict("records"), "notes": notes,
        "oracle": None if oracle_table is None else oracle_table.to_dict("records"), "oracle_summary": oracle_summary})
    if html:
        evaluation_html(result, out / "report.html", title=f"Seq2Seq evaluation ({split}, {len(subjects)} subjects)")
    return result


def evaluation_html(result: SynthEvaluation, path: str | Path, title: str, extra_sections: list | None = None,
                    subtitle: str | None = None) -> Path:
    """The self-contained HTML report of an evaluation (plus any extra sections first)."""
    from mridomain.report import Section, write_html_report

    sections = list(extra_sections or [])
    sections.append(Section("Table 1: generation quality per source -> target pair",
                            text="PSNR over the volume and SSIM averaged over its slices (torchmetrics, images "
                                 "normalized to [0, 1]; 2-D runs: the slices holding the head); mean and "
                                 "standard deviation over subjects.",
                            tables=[result.pairs.round(4), ("overall", pd.DataFrame([result.overall]).round(4))],
                            note="; ".join(result.notes) or None))
    sections.append(Section("Table 2: sequence contribution (eq. 4)", text=result.contribution_note,
                            tables=[result.contribution.round(3), ("adjacency A_ij", result.adjacency.round(3))],
                            figures=[("A_ij and degree centralities", result.out / "contribution.png")]))
    if result.dmap_check is not None:
        sections.append(Section("Imaging-differentiation maps against the simulator's ground truth (eq. 5)",
                                text="ROC AUC of each map's voxel values for the region against the rest of the "
                                     "brain (pooled over the held-out subjects; per-subject mean and std beside).",
                                tables=[result.dmap_check.round(3)]))
    if result.oracle is not None:
        lines = [f"{kind} oracle: order {s['oracle_order']}; learned C_d top {s['learned_top']} vs oracle top "
                 f"{s['oracle_top']} ({'match' if s['top_matches'] else 'no match'}); Spearman rho {s['spearman']:.2f}"
                 for kind, s in result.oracle_summary.items()]
        sections.append(Section("The simulator's known answer (oracle)", text=(
            "For each target sequence a gradient-boosting regressor predicts its voxels from the other sequences' "
            "3x3x3 neighbourhoods, fitted on the run's training subjects and scored on the same held-out subjects: "
            "its unexplained fraction (1 - R^2 over the brain) is the C_d order to expect, its error map the M_d to "
            "expect (auc_oracle_* columns of the M_d table), and its PSNR what a voxel-wise predictor reaches. "
            "noise-free: the same subjects re-rendered without noise. pairwise: each target from each single "
            "other sequence, as C_d scores the generator (A_ij: how well i alone generates j), averaged over the "
            "sources; oracle_pairs.csv puts every pair's oracle PSNR next to the generator's. pairwise eq. 4: the "
            "pairwise oracle's own translations scored (PSNR, SSIM) and ranked by eq. 4 exactly as the generator's "
            "are, without the diagonal (the oracle has no self-translation): the C_d order a generator as good as "
            "the oracle would show (column c_d_pairwise_eq4).\n\n" + "\n\n".join(lines)),
                                tables=[result.oracle.round(3)]))
    if (result.out / "dmap_example.png").exists():
        sections.append(Section("M_d example",
                                figures=[("each sequence and its M_d", result.out / "dmap_example.png")]))
    sections.append(Section("Model profile", text=(
        "params_M / GMACs: every tensor and every multiply-accumulate (torch.utils.flop_counter); "
        "*_paper_count: leaf-module parameters and nn.Module convolutions only, as the THOP profiler "
        "counts, which leaves out the HyperConv weight banks: this reproduces the paper's 35.8 M / 83.4 GMACs."),
                            tables=[result.profiles]))
    return write_html_report(path, title, sections, subtitle=subtitle)


def rank_sequences(run: str | Path, split: str = "test", normalization: Literal["zscore", "minmax"] = "zscore",
                   out: str | Path | None = None, include_self: bool = True) -> tuple[pd.DataFrame, str]:
    """Table 2 of a run (Python twin of ``mridomain synth contribution``).

    Uses ``RUN/eval_<split>/pairs_subjects.csv`` when :func:`mridomain.synth.evaluate` wrote it, else
    evaluates first. Writes the table (``out``, default ``RUN/eval_<split>/contribution_<norm>.csv``)
    and its heat map beside it; returns ``(table, note)``.
    """
    from mridomain.errors import check_choice

    check_choice(normalization, "normalization", ("zscore", "minmax"))   # before a minute of evaluation
    run = Path(run)
    rows_path = run / f"eval_{split}" / "pairs_subjects.csv"
    if not rows_path.exists():
        evaluate(run, split=split)
    r = load_run(run)
    rows = pd.read_csv(rows_path)
    table, a, note = contribution_table(rows, r.sequences, normalization, include_self)
    out = Path(out) if out is not None else rows_path.parent / f"contribution_{normalization}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    plot_contribution(a, table, note).savefig(out.with_suffix(".png"), dpi=90)
    return table, note
