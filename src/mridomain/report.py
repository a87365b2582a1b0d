"""Self-contained HTML reports of every system (IAP evaluation, analysis, shift, synthesis): one file, images embedded as base64 PNG, no external resources.

A report is a title plus a list of sections; a section holds text, tables (DataFrames) and figures
(matplotlib figures, PNG bytes or PNG files). The file opens offline in any browser and can be
mailed or archived as is, which is why nothing is linked: every image is a ``data:`` URI.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["Section", "write_html_report", "figure_to_png", "figure_grid", "wrap_label", "png_data_uri", "df_to_markdown", "colored_table",
           "VERDICT_COLORS"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222;line-height:1.4;padding:0 12px}
h1{font-size:1.6em;border-bottom:2px solid #446;padding-bottom:4px}
h2{font-size:1.25em;margin-top:1.6em;color:#334}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:0.85em}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}
th{background:#eef}
td:first-child,th:first-child{text-align:left}
figure{margin:8px 0 18px 0}
figcaption{font-size:0.85em;color:#555}
img{max-width:100%;height:auto;border:1px solid #ddd}
p.note{background:#fff6dd;border-left:4px solid #e0a000;padding:6px 10px}
pre{background:#f4f4f4;padding:8px;overflow-x:auto;font-size:0.85em}
"""


@dataclass
class Section:
    """One block of a report.

    ``tables`` and ``figures`` items may be bare objects or ``(caption, object)`` pairs. Figures
    are matplotlib figures, PNG bytes or paths to PNG files. ``html`` is inserted verbatim (it
    must itself be self-contained); ``text`` is escaped and split into paragraphs on blank lines.
    ``note`` is a highlighted paragraph for statements the reader must not miss.
    """

    title: str
    text: str | None = None
    tables: list[Any] = field(default_factory=list)
    figures: list[Any] = field(default_factory=list)
    html: str | None = None
    note: str | None = None


def figure_to_png(fig: Any, dpi: int = 90) -> bytes:
    """Render a matplotlib figure to PNG bytes (a pyplot-managed one is closed: reports make many)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buf.getvalue()


def wrap_label(text: Any, width: int = 18) -> str:
    """A long tick label broken over lines, never cut: scan options such as
    "FAST_GEMS\\SAT_GEMS\\MP_GEMS\\PFP\\FS" break after a backslash, so labels that differ only
    at their end stay distinct."""
    import textwrap

    parts = str(text).replace("\\", "\\ ").split(" ")
    return "\n".join(textwrap.wrap(" ".join(parts), width=width, break_long_words=True)).replace("\\ ", "\\")


def figure_grid(n_panels: int, max_columns: int, panel_width: float, panel_height: float) -> tuple[Any, list[Any]]:
    """A matplotlib Figure (no pyplot) with one axes per panel on a grid of up to ``max_columns``
    columns; the grid's spare cells are switched off. Returns (figure, axes in reading order)."""
    from matplotlib.figure import Figure

    ncol = max(1, min(max_columns, n_panels))
    nrow = max(1, -(-n_panels // ncol))
    fig = Figure(figsize=(panel_width * ncol, panel_height * nrow))
    axes = list(fig.subplots(nrow, ncol, squeeze=False).flat)
    for ax in axes[n_panels:]:
        ax.axis("off")
    return fig, axes[:n_panels]


def png_data_uri(obj: Any) -> str:
    """A ``data:image/png;base64,...`` URI for a figure, PNG bytes or a PNG file path."""
    if isinstance(obj, (bytes, bytearray)):
        data = bytes(obj)
    elif isinstance(obj, (str, Path)):
        data = Path(obj).read_bytes()
    elif hasattr(obj, "savefig"):
        data = figure_to_png(obj)
    else:
        raise TypeError(f"cannot embed object of type {type(obj).__name__} as an image")
    if not data.startswith(b"\x89PNG"):
        raise ValueError("embedded images must be PNG")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return ""
        return f"{v:.4g}"
    return str(v)


def df_to_markdown(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub markdown table (no ``tabulate`` dependency)."""
    d = df.reset_index() if index else df
    cols = [str(c) for c in d.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in d.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


#: the colours reports give verdicts (in the training domain / uncertain / out of it)
VERDICT_COLORS = {"in": "#d9f2d9", "uncertain": "#fff0c2", "out": "#f7c6c6"}


def colored_table(df: pd.DataFrame, column: str, colors: Mapping[str, str] = VERDICT_COLORS) -> Any:
    """A table whose ``column`` cells are coloured by value (a pandas Styler; a report section
    renders it like a DataFrame)."""
    def color(value: Any) -> str:
        return f"background-color: {colors[value]}" if value in colors else ""

    return df.style.map(color, subset=[column]).format(precision=4, na_rep="").hide(axis="index")


def _table_html(obj: Any) -> str:
    if hasattr(obj, "to_html") and type(obj).__name__ == "Styler":
        return obj.set_table_attributes('border="0"').to_html()
    if isinstance(obj, pd.Series):
        obj = obj.to_frame()
    if isinstance(obj, Mapping):
        obj = pd.DataFrame({"key": list(obj.keys()), "value": [_fmt(v) for v in obj.values()]})
    if not isinstance(obj, pd.DataFrame):
        raise TypeError(f"cannot render object of type {type(obj).__name__} as a table")
    show_index = not isinstance(obj.index, pd.RangeIndex)
    return obj.to_html(index=show_index, escape=True, border=0, na_rep="",
                       float_format=lambda x: f"{x:.4g}")


def _split_caption(item: Any) -> tuple[str | None, Any]:
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    return None, item


def _section_html(sec: Section | Mapping[str, Any]) -> str:
    if isinstance(sec, Mapping):
        sec = Section(**sec)
    parts = [f"<h2>{html.escape(sec.title)}</h2>"]
    if sec.note:
        parts.append(f'<p class="note">{html.escape(sec.note)}</p>')
    if sec.text:
        for para in str(sec.text).split("\n\n"):
            parts.append(f"<p>{html.escape(para).replace(chr(10), '<br>')}</p>")
    for item in sec.tables:
        cap, tab = _split_caption(item)
        if cap:
            parts.append(f"<p><b>{html.escape(cap)}</b></p>")
        parts.append(_table_html(tab))
    for item in sec.figures:
        cap, fig = _split_caption(item)
        alt = html.escape(cap or sec.title)
        parts.append(f'<figure><img alt="{alt}" src="{png_data_uri(fig)}">'
                     + (f"<figcaption>{alt}</figcaption>" if cap else "") + "</figure>")
    if sec.html:
        parts.append(sec.html)
    return "\n".join(parts)


def write_html_report(path: str | Path, title: str,
                      sections: Sequence[Section | Mapping[str, Any]],
                      subtitle: str | None = None) -> Path:
    """Write ONE self-contained HTML file (inline CSS, base64 PNG images, HTML tables).

    Args:
        path: file to write (parent folders are created).
        title: page and top heading.
        sections: :class:`Section` objects or dicts with the same keys.
        subtitle: optional line under the heading (e.g. the command that made the report).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(_section_html(s) for s in sections)
    sub = f"<p>{html.escape(subtitle)}</p>" if subtitle else ""
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>{sub}\n{body}\n"
        "<p style=\"color:#888;font-size:0.8em\">Generated by mridomain.</p>\n</body></html>\n"
    )
    path.write_text(doc, encoding="utf-8")
    return path
