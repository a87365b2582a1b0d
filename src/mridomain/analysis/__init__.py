"""mridomain.analysis: dataset IAP statistics, domain routing, applicability check, HTML reports.

Public API (each has a CLI twin named in docs/architecture.md):
``analyze`` (paper Appendix A.1), ``route`` / ``run_routing_experiment`` (paper Table 2),
``compare`` (applicability / out-of-distribution check), ``write_html_report``.
"""
from __future__ import annotations

from mridomain.analysis.html import Section, evaluation_report_html, write_html_report
from mridomain.analysis.stats import AnalysisResult, analyze

__all__ = ["AnalysisResult", "Section", "analyze", "evaluation_report_html", "write_html_report"]
