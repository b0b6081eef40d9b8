"""Once-for-all training: DepS and the OFA / BigNAS / CompOFA / full baselines, one loop.

`train(TrainConfig.load("small", ["method=deps"]))` trains, checkpoints every
epoch, evaluates the fixed evaluation set and writes `results.json`.
"""

from .config import TrainConfig, list_presets
from .evaluate import accuracy, evaluate_subnets, evaluation_subnets, recalibrate
from .loop import TrainResult, train
from .methods import METHODS, PAPER_EPOCHS, StepPlan, Task, make_method, method_names

__all__ = [
    "METHODS",
    "PAPER_EPOCHS",
    "StepPlan",
    "Task",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "evaluate_subnets",
    "evaluation_subnets",
    "list_presets",
    "make_method",
    "method_names",
    "recalibrate",
    "train",
]
