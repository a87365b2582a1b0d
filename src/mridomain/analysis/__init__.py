"""mridomain.analysis: dataset IAP statistics, domain routing, applicability check, HTML reports.

Public API:
``analyze`` (paper Appendix A.1: Figs 3-8, Table 3), ``route`` and ``run_routing_experiment``
(paper §5.2, Table 2), ``compare`` (applicability / out-of-distribution check),
``write_html_report`` / ``evaluation_report_html`` (self-contained HTML), ``TumorClassifier``.
"""
from __future__ import annotations

from mridomain.analysis.applicability import CompareResult, compare
from mridomain.analysis.classifier import TumorClassifier, TumorClassifierConfig
from mridomain.iap.evaluation import evaluation_report_html
from mridomain.report import Section, write_html_report
from mridomain.analysis.routing import RoutingExperiment, evaluate_routing, route, run_routing_experiment
from mridomain.analysis.stats import AnalysisResult, analyze

__all__ = ["AnalysisResult", "CompareResult", "RoutingExperiment", "Section", "TumorClassifier",
           "TumorClassifierConfig", "analyze", "compare", "evaluate_routing", "evaluation_report_html",
           "route", "run_routing_experiment", "write_html_report"]
