"""Deprecated location: dataset analysis, routing and the applicability check moved into the IAP
room, :mod:`mridomain.iap` (``mridomain.iap.analyze``, ``route``, ``compare``, ...).

This package answers to its pre-0.2 names for one release: the same objects, and its old module
paths as aliases of the moved modules (``mridomain.analysis.stats`` is ``mridomain.iap.analysis``).
"""
from __future__ import annotations

import importlib
import sys

from mridomain.iap.analysis import AnalysisResult, analyze
from mridomain.iap.applicability import CompareResult, compare
from mridomain.iap.evaluation import evaluation_report_html
from mridomain.iap.routing import RoutingExperiment, evaluate_routing, route, run_routing_experiment
from mridomain.iap.tumor_classifier import TumorClassifier, TumorClassifierConfig
from mridomain.report import Section, write_html_report

_MOVED = {"stats": "analysis", "routing": "routing", "applicability": "applicability",
          "classifier": "tumor_classifier", "_common": "_analysis_common"}
for _old, _new in _MOVED.items():
    sys.modules[f"{__name__}.{_old}"] = importlib.import_module(f"mridomain.iap.{_new}")

__all__ = ["AnalysisResult", "CompareResult", "RoutingExperiment", "Section", "TumorClassifier",
           "TumorClassifierConfig", "analyze", "compare", "evaluate_routing", "evaluation_report_html",
           "route", "run_routing_experiment", "write_html_report"]
