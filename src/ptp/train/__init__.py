"""Training: windows and masks that match the decoder's layout, the teacher pass and bins, losses, checkpoints and
the training loops (distillation of a PTP drafter, plain autoregressive training)."""

from ptp.train.config import DistillConfig
from ptp.train.evaluation import evaluate_adapter
from ptp.train.loop import DistillResult, distill, evaluate, train_autoregressive

__all__ = ["DistillConfig", "DistillResult", "distill", "evaluate", "evaluate_adapter", "train_autoregressive"]
