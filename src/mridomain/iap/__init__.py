"""mridomain.iap: the multi-task network that reads acquisition parameters (IAPs) off the pixels.

Paper: Konz & Mazurowski, MIDL 2023, Sec. 4-5. One backbone (MONAI ResNet-18, or a small CNN for
CPUs), one linear layer with sum(C_k) + M outputs, loss lambda * sum CE + eta * sum MSE (eq. 1).

    train(cache, out, preset="cpu")            -> TrainResult   (CLI: mridomain train)
    evaluate(run, split="test")                -> EvalReport    (CLI: mridomain evaluate)
    predict_paths(run, paths, out="preds.csv") -> PredictionResult (CLI: mridomain predict)
    calibrate(run)                             -> summary       (CLI: mridomain calibrate; train does it)
    IAPPredictor(preset="cpu").fit(cache).predict(images); IAPPredictor.load(run); load_run(run)
    Predictor / PredictorOutput                 the one predictor interface (forward)
    IAPRun.load(run)                            a run folder as one object (what IAPPredictor adds fit to)

Dataset analysis and deployment (paper Appendix A.1 and Sec. 5.2):

    analyze(source)                            -> AnalysisResult (CLI: mridomain analyze)
    route(run, paths, models)                  -> routing table  (CLI: mridomain route)
    run_routing_experiment(cache, run)         -> RoutingExperiment (CLI: mridomain route-experiment)
    compare(run, new)                          -> CompareResult  (CLI: mridomain compare)
    run_demo(out)                              -> Table 1        (CLI: mridomain demo)
"""
from __future__ import annotations

from mridomain.lazy import lazy_exports

# Names resolve lazily (PEP 562) so that ``mridomain --help``, which mounts iap.cli, does not import torch.
_EXPORTS: dict[str, str] = {
    "calibrate": "trust",
    "DENSE_CATEGORICAL_IAPS": "config", "PRESETS": "config", "IAPConfig": "config", "get_preset": "config",
    "EvalReport": "evaluation", "compute_report": "evaluation", "evaluate": "evaluation",
    "evaluation_report_html": "evaluation",
    "IGNORE_INDEX": "labels", "OTHER": "labels", "LabelEncoder": "labels",
    "IAPNet": "model", "build_model": "model", "iap_loss": "model",
    "IAPPredictor": "prediction", "PredictionResult": "prediction", "load_run": "prediction",
    "predict_paths": "prediction",
    "Predictor": "predictor", "PredictorOutput": "predictor",
    "IAPRun": "run", "NotFittedError": "run", "as_predictor": "run",
    "TrainResult": "training", "train": "training",
    "AnalysisResult": "analysis", "analyze": "analysis",
    "CompareResult": "applicability", "compare": "applicability",
    "RoutingExperiment": "routing", "evaluate_routing": "routing", "route": "routing",
    "run_routing_experiment": "routing",
    "TumorClassifier": "tumor_classifier", "TumorClassifierConfig": "tumor_classifier",
    "run_demo": "demo",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
