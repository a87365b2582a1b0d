"""Prediction of IAPs from image files (CLI ``predict``) and the Python API twin ``IAPPredictor``."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from mridomain.data.inputs import iter_inputs
from mridomain.files import write_skip_report
from mridomain.data.schema import normalize_iaps
from mridomain.errors import EmptyInputError, InvalidArgumentError
from mridomain.iap.evaluation import RELATIVE_TOLERANCE
from mridomain.iap.labels import LabelEncoder, category_string, is_missing
from mridomain.iap.domain import DomainRule, reason_counts
from mridomain.iap.predictor import UNKNOWN, PredictorOutput, value_column
from mridomain.parallel import read_ahead
from mridomain.iap.run import IAPRun


def true_values(meta: dict[str, Any], encoder: LabelEncoder) -> dict[str, Any]:
    """Normalized IAP values from a DICOM header (``normalize_iaps``); {} for NIfTI / PNG inputs.

    Only the encoder's IAPs that the header states are returned (absent tags give no truth).
    """
    if meta.get("source_format") != "dicom":
        return {}
    vals = normalize_iaps(meta)
    return {h.name: vals.get(h.name) for h in encoder.heads if not is_missing(vals.get(h.name))}


def header_truths(inputs: Sequence[Any], encoder: LabelEncoder) -> list[dict[str, Any]]:
    """Per slice of ``inputs`` (:class:`mridomain.data.inputs.InputImage`, in order): the header
    values of its input as :meth:`DomainModel.judge` takes them ({} where there is no header)."""
    out: list[dict[str, Any]] = []
    for item in inputs:
        truth = true_values(item.meta, encoder)
        header = {k: (category_string(v) if encoder.head(k).kind == "categorical" else float(v))
                  for k, v in truth.items()}
        out += [header] * len(item.slices)
    return out


# ---- turning outputs into rows ------------------------------------------------------------------

def _column(h: Any) -> str:
    return value_column(h.name, h.unit) if h.kind == "continuous" else h.name


def _is_correct(h: Any, pred: Any, truth: Any) -> bool:
    if h.kind == "continuous":
        t = float(truth)
        return t != 0 and abs(float(pred) - t) / abs(t) < RELATIVE_TOLERANCE
    return category_string(truth) == pred


@dataclass
class PredictionResult:
    """Rows per slice and per series/volume, plus the inputs that could not be read."""

    table: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    out: Path | None = None
    figure: Path | None = None
    iaps: list[str] = field(default_factory=list)
    domain_note: str | None = None      # how the in-domain threshold was calibrated (None: no domain model)
    abstained: bool = False
    rule: DomainRule | None = None
    engine: str = ""                    # which engine ran the network, and under auto why (one line)

    @property
    def n_out_of_domain(self) -> int | None:
        """Inputs (series rows) outside the training domain; None when the run has no domain model."""
        s = self.series
        if "in_domain" not in s.columns:
            return None
        return int((~s["in_domain"].astype(bool)).sum())

    @property
    def series(self) -> pd.DataFrame:
        """The series / volume rows of the table (one per input)."""
        return self.table[self.table["level"] == "series"].reset_index(drop=True)

    @property
    def slices(self) -> pd.DataFrame:
        """The slice rows of the table."""
        return self.table[self.table["level"] == "slice"].reset_index(drop=True)

    def summary(self) -> str:
        """Lines for the terminal: slices and inputs predicted, what was written, the engine, the domain
        verdict, the first 10 inputs' answers and each skipped input with why."""
        s = self.series
        lines = [f"predicted {len(self.slices)} slices in {len(s)} inputs"
                 + (f"; skipped {len(self.skipped)} unreadable" if self.skipped else "")
                 + (f"; wrote {self.out}" if self.out else "") + (f" and {self.figure}" if self.figure else "")]
        if self.engine:
            lines.append(f"  {self.engine}")
        n_out = self.n_out_of_domain
        if n_out is None:
            lines.append("  no domain model in this run (trained before it existed): `mridomain calibrate RUN` adds one")
        else:
            by = ", ".join(f"{n} {r}" for r, n in reason_counts(s).items())
            if self.domain_note and "too small to judge" in self.domain_note:
                lines.append("  WARNING: this run's domain model is too small to judge; in-domain verdicts are "
                             f"unreliable ({self.domain_note})")
            lines.append(f"  {n_out} of {len(s)} inputs are OUTSIDE the training domain (by reason: {by})"
                         + (" (answered 'unknown')" if self.abstained and n_out else
                            " (their answers are not to be trusted; --abstain answers 'unknown')" if n_out else ""))
        show = [n for n in self.iaps if n in s.columns][:4]
        cont = [c for c in s.columns if c.startswith(("tr_", "te_")) and not c.startswith("true_")]
        for _, r in s.head(10).iterrows():
            parts = [f"{n}={r[n]}" + ("" if r[n] == UNKNOWN else f" ({100 * r[n + '_prob']:.0f}%)") for n in show]
            parts += [f"{c}={r[c]:.3g}" for c in cont if not pd.isna(r[c])]
            if "in_domain" in r and not bool(r["in_domain"]):
                parts.insert(0, f"OUT OF DOMAIN ({r.get('domain_reason', 'image')})")
            if isinstance(r.get("header_unseen"), str) and r["header_unseen"]:
                parts.append(f"header: {r['header_unseen']}")
            lines.append(f"  {Path(str(r['source'])).name}: " + ", ".join(parts))
        if len(s) > 10:
            lines.append(f"  ... {len(s) - 10} more")
        for path, reason in self.skipped:
            lines.append(f"  skipped {path}: {reason}")
        return "\n".join(lines)


def _write_table(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(table.to_json(orient="records", indent=1))
    else:
        table.to_csv(out, index=False)


def _draw_figure(panels: list[dict[str, Any]], encoder: LabelEncoder, path: Path) -> Any:
    """A grid like the paper's Fig. 2: one slice per input, its name above (wrapped, never cut), the
    predicted IAPs below (green: the header agrees, red: it does not, black: no header value), a red
    frame and an "OUT OF DOMAIN" title on inputs outside the run's training domain, and a legend."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from mridomain.report import wrap_label

    if not panels:
        return None
    n = len(panels)
    ncol = min(n, 5)
    nrow = int(np.ceil(n / ncol))
    texts = []
    for p in panels:
        lines = []
        for h in encoder.heads:
            pred = p["row"][_column(h)]
            shown = f"{pred:.3f} {h.unit or ''}" if h.kind == "continuous" else str(pred)
            truth = p["truth"].get(h.name)
            if truth is None:
                color, mark = "black", ""
            else:
                color, mark = ("green", " \u2713") if _is_correct(h, pred, truth) else ("red", " \u2717")
            lines.append((wrap_label(f"{h.name}: {shown}{mark}", width=40), color))
        texts.append(lines)
    title_lines = max(len(wrap_label(Path(str(p["source"])).name, width=34).splitlines()) for p in panels) + 1
    line_h, img_h, col_w = 0.17, 2.6, 3.0                          # inches
    text_lines = max(sum(t.count("\n") + 1 for t, _ in lines) for lines in texts)
    title_h = 0.17 * title_lines + 0.1
    row_h = title_h + img_h + line_h * text_lines + 0.2
    legend_h = 0.55
    fig_h = nrow * row_h + legend_h
    fig = Figure(figsize=(col_w * ncol, fig_h))
    for k, (p, lines) in enumerate(zip(panels, texts)):
        r, c = divmod(k, ncol)
        top = fig_h - legend_h - r * row_h                         # inches from the bottom
        ax = fig.add_axes([(c + 0.04) / ncol, (top - title_h - img_h) / fig_h, 0.92 / ncol, img_h / fig_h])
        ax.imshow(p["image"], cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        outside = "in_domain" in p["row"] and p["row"]["in_domain"] is not None and not bool(p["row"]["in_domain"])
        name = wrap_label(Path(str(p["source"])).name, width=34)
        if outside:
            ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, edgecolor="red", linewidth=5))
            ax.set_title("OUT OF DOMAIN\n" + name, fontsize=8, color="red", fontweight="bold")
        else:
            ax.set_title(name, fontsize=8)
            for spine in ax.spines.values():
                spine.set_visible(False)
        y = top - title_h - img_h - 0.06
        for text, color in lines:
            fig.text((c + 0.04) / ncol, y / fig_h, text, fontsize=7, color=color, va="top")
            y -= line_h * (text.count("\n") + 1)
    has_domain = any("in_domain" in p["row"] for p in panels)
    legend = ("green \u2713: the prediction matches the DICOM header   red \u2717: it does not   "
              "black: no header value")
    if has_domain:
        legend += "\nred frame, OUT OF DOMAIN: the image lies outside the run's training domain (do not trust its answers)"
    fig.text(0.01, (fig_h - 0.08) / fig_h, legend, fontsize=8, va="top")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return fig


def _chunks(items: Iterator[Any], min_slices: int) -> Iterator[list[Any]]:
    """Consecutive inputs gathered until they hold at least ``min_slices`` slices."""
    chunk, n = [], 0
    for item in items:
        chunk.append(item)
        n += len(item.slices)
        if n >= min_slices:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


class _Rows:
    """Table rows gathered input by input: every ``chunk`` rows become a DataFrame block, so the
    memory a long run holds grows with its output table, not with python dicts of numpy scalars
    (several times larger)."""

    def __init__(self, chunk: int = 128):
        self.chunk, self.rows, self.blocks = chunk, [], []

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.chunk:
            self.blocks.append(pd.DataFrame(self.rows))
            self.rows = []

    def flush(self) -> None:
        if self.rows:
            self.blocks.append(pd.DataFrame(self.rows))
            self.rows = []

    def frame(self) -> pd.DataFrame:
        blocks = self.blocks + ([pd.DataFrame(self.rows)] if self.rows else [])
        return pd.concat(blocks, ignore_index=True, sort=False) if blocks else pd.DataFrame()


def predict_paths(run: str | Path, paths: Sequence[str | Path], out: str | Path | None = "predictions.csv",
                  top_k: int = 2, figure: str | Path | None = None, batch_size: int | None = None,
                  progress: bool = True, device: str | None = None, abstain: bool = False,
                  combinations: str | Path | pd.DataFrame | None = None,
                  keep_kinds: Sequence[str] = (), rule: DomainRule | None = None,
                  engine: str = "auto", chunk_slices: int = 64, read_ahead_inputs: int = 4) -> PredictionResult:
    """Predict the IAPs of DICOM files / series folders / archive folders, NIfTI volumes and
    PNG/JPG images.

    Each input is read through :mod:`mridomain.data.inputs` (a folder holding many series gives one
    input per series volume; phase, derived, localizer and secondary-capture images are skipped
    unless ``keep_kinds`` names their kind), every slice is preprocessed exactly as the run's
    ``preprocess.json`` says, and the network runs in batches. The table has one row per slice
    (``level == "slice"``) and one per input (``level == "series"``: slice probabilities averaged,
    continuous values averaged), the series identity (``series_uid``, ``patient_id``,
    ``series_description``, ``volume``), the top-k values and probabilities of each categorical
    IAP, TR/TE in ms, and
    ``true_<iap>`` where the DICOM header holds the value. Where the run has a domain model
    (``domain.json``, written by training), every row has ``domain_score`` (series: the median
    slice), ``header_unseen`` (header values outside the training vocabulary or range) and the
    verdict of all the evidence (:meth:`~mridomain.iap.domain.DomainModel.judge`): ``in_domain``
    and ``domain_reason`` ("image", "header", "image+header"; "" in). Where it has ``combinations.json``, ``joint_<iap>`` is the most probable
    combination of scanner-related IAPs seen in training (or allowed by ``combinations``, a table
    of allowed combinations), next to the per-head answers. Unreadable inputs are reported in
    ``skipped`` (and ``<out stem>_skipped.csv``) and the rest finishes.

    Args:
        abstain: answer "unknown" (continuous: NaN) for every IAP of an out-of-domain row.
        rule: how header evidence counts (None: the run's ``domain.json`` rule, by default a
            header value unseen in training makes the input out of domain).
        combinations: CSV / parquet (or DataFrame) of allowed IAP combinations for joint decoding.
        out: .csv or .json (None: write nothing); checked before any work, as ``figure`` is.
        keep_kinds: image kinds to predict although they are not anatomical images.
        engine: "auto" (ONNX Runtime where the run has a usable model.onnx and onnxruntime is
            installed, else PyTorch; ``result.engine`` and the summary say which and why), "onnx",
            "onnx-int8" or "torch" (:mod:`mridomain.iap.runtime`).
        chunk_slices: inputs are gathered until they hold this many slices, and each such chunk
            gets one forward pass and one table (1: every input alone, as before issue 28).
        read_ahead_inputs: inputs a background thread reads and preprocesses while the network
            runs (0: none, reading and computing take turns).

    Raises:
        EmptyInputError: none of the inputs could be read (the skipped report is written first).
    """
    from mridomain.files import check_output_file
    from mridomain.iap.decoding import joint_decode, load_combination_table

    if top_k < 1:
        raise InvalidArgumentError(f"top_k {top_k}: must be at least 1")
    if chunk_slices < 1 or read_ahead_inputs < 0:
        raise InvalidArgumentError(f"chunk_slices {chunk_slices} / read_ahead_inputs {read_ahead_inputs}: "
                                   "must be at least 1 / 0")
    out_path = check_output_file(out, "predictions table") if out is not None else None
    fig_path = check_output_file(figure, "figure") if figure is not None else None
    paths = [Path(p) for p in paths]
    if not paths:
        raise EmptyInputError("predict", "no input paths given")
    predictor = IAPPredictor.load(run, device=device, engine=engine)
    encoder, domain = predictor.encoder, predictor.domain
    rule = rule or (domain.rule if domain is not None else None)
    combos = predictor.combinations
    if combinations is not None:
        combos = combinations if isinstance(combinations, pd.DataFrame) else load_combination_table(combinations)
    rows = _Rows()
    skipped: list[tuple[str, str]] = []
    panels: list[dict[str, Any]] = []
    items = iter_inputs(paths, predictor.preprocess, skipped, progress=progress, desc="predict",
                        keep_kinds=keep_kinds)
    for chunk in _chunks(read_ahead(items, read_ahead_inputs), chunk_slices):
        # one forward pass, one verdict, one table per chunk of inputs: per-input pandas work
        # cost more than the network itself on series of a few slices
        output = predictor.forward(np.concatenate([item.slices for item in chunk]), batch_size=batch_size)
        bounds = np.cumsum([0] + [len(item.slices) for item in chunk])
        truths = [true_values(item.meta, encoder) for item in chunk]
        truth_cols: list[dict[str, Any]] = [
            {f"true_{k}": (category_string(v) if encoder.head(k).kind == "categorical" else float(v))
             for k, v in truth.items()} for truth in truths]
        series_output = PredictorOutput.concat([output.subset(slice(a, b)).mean()
                                                for a, b in zip(bounds[:-1], bounds[1:])])
        slice_inside = series_inside = None
        if domain is not None:
            headers = [{k: cols[f"true_{k}"] for k in truth} for truth, cols in zip(truths, truth_cols)]
            slice_headers = [h for h, item in zip(headers, chunk) for _ in range(len(item.slices))]
            slice_verdict = domain.judge(output.domain_score, slice_headers, rule)
            series_verdict = domain.judge(series_output.domain_score, headers, rule)
            slice_inside, series_inside = slice_verdict["in_domain"].to_numpy(), series_verdict["in_domain"].to_numpy()
        slice_table = output.table(top_k, abstain=abstain, in_domain=slice_inside)
        series_table = series_output.table(top_k, abstain=abstain, in_domain=series_inside)
        if domain is not None:
            slice_table = pd.concat([slice_table, slice_verdict.drop(columns="in_domain")], axis=1)
            series_table = pd.concat([series_table, series_verdict.drop(columns="in_domain")], axis=1)
        if combos is not None and not combos.empty:
            slice_table = pd.concat([slice_table, joint_decode(output, combos)], axis=1)
            series_table = pd.concat([series_table, joint_decode(series_output, combos)], axis=1)
        # one to_dict per chunk, not per input: pandas extracts every column once per call, which
        # on the demo's test split cost 0.75 s of predict's 2.6 (a chunk's rows are a few dozen dicts)
        slice_records, series_records = slice_table.to_dict("records"), series_table.to_dict("records")
        for k, item in enumerate(chunk):
            identity = item.identity
            for i, r in enumerate(slice_records[bounds[k]:bounds[k + 1]]):
                rows.append({"source": str(item.source), "level": "slice", "slice": i, "file": str(item.file_of(i)),
                             **identity, **r, **truth_cols[k]})
            series_row = series_records[k]
            rows.append({"source": str(item.source), "level": "series", "slice": None, "file": str(item.source),
                         "n_slices": len(item.slices), **identity, **series_row, **truth_cols[k]})
            if figure is not None and len(panels) < 12:   # only what the figure shows is kept
                panels.append({"source": item.source, "image": item.slices[len(item.slices) // 2],
                               "row": series_row, "truth": truths[k]})
        if len(chunk) > 1:
            # a chunk's rows become a block now, while its arrays and tables are freed: pending
            # row dicts (the costliest form of a row) never pile up beside a chunk's working set
            rows.flush()
    table = rows.frame()
    if out_path is not None:
        write_skip_report(skipped, out_path.with_name(out_path.stem + "_skipped.csv"))
    if len(table) == 0:
        first = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise EmptyInputError(paths[0], f"nothing to predict: none of the {len(paths)} inputs could be read{first}")
    if out_path is not None:
        _write_table(table, out_path)
    if fig_path is not None:
        _draw_figure(panels, encoder, fig_path)
    return PredictionResult(table=table, skipped=skipped, out=out_path, figure=fig_path,
                            iaps=[h.name for h in encoder.heads if h.kind == "categorical"],
                            domain_note=domain.note if domain is not None else None, abstained=abstain,
                            rule=rule, engine=predictor.engine_note)


# ---- Python API twin ------------------------------------------------------------------------------

class IAPPredictor(IAPRun):
    """scikit-learn-like front end: ``IAPPredictor(preset="cpu").fit(cache).predict(images)``.

    ``predict`` takes raw images (N, H, W) - preprocessed like the training cache unless
    ``preprocessed=True`` - or a list of file/folder paths. Everything but ``fit`` is the loaded
    run folder (:class:`~mridomain.iap.run.IAPRun`).
    """

    def fit(self, cache: Any, out: str | Path | None = None, progress: bool = True) -> "IAPPredictor":
        """Train on a slice cache (into ``out``, or a temporary run folder) and keep the best model."""
        from mridomain.iap.training import train

        out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="iap_run_"))
        train(cache, out, preset=self.config, seed=self.config.seed, progress=progress)
        self._load(out)
        return self


def load_run(run: str | Path, device: str | None = None, engine: str = "torch") -> IAPPredictor:
    """Shortcut for :meth:`IAPPredictor.load`."""
    return IAPPredictor.load(run, device=device, engine=engine)
