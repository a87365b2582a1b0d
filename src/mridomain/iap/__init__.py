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
"""
from mridomain.iap.trust import calibrate
from mridomain.iap.config import DENSE_CATEGORICAL_IAPS, PRESETS, IAPConfig, get_preset
from mridomain.iap.evaluation import EvalReport, compute_report, evaluate
from mridomain.iap.labels import IGNORE_INDEX, OTHER, LabelEncoder
from mridomain.iap.model import IAPNet, build_model, iap_loss
from mridomain.iap.prediction import IAPPredictor, PredictionResult, load_run, predict_paths
from mridomain.iap.predictor import Predictor, PredictorOutput
from mridomain.iap.run import IAPRun, NotFittedError, as_predictor
from mridomain.iap.training import TrainResult, train

__all__ = ["IAPConfig", "PRESETS", "DENSE_CATEGORICAL_IAPS", "get_preset", "LabelEncoder", "IGNORE_INDEX",
           "OTHER", "IAPNet", "build_model", "iap_loss", "train", "TrainResult", "evaluate", "EvalReport",
           "compute_report", "predict_paths", "PredictionResult", "IAPPredictor", "NotFittedError",
           "load_run", "calibrate", "Predictor", "PredictorOutput", "IAPRun", "as_predictor"]
