"""Moved to :mod:`mridomain.report` (the HTML writer every system shares); kept importable here."""
from mridomain.report import Section, df_to_markdown, figure_to_png, png_data_uri, write_html_report  # noqa: F401
