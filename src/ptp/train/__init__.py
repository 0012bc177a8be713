"""Training: windows and masks that match the decoder's layout, the teacher pass and bins, losses, checkpoints, the
training loop, distillation of a PTP drafter, evaluation, and training on text (plain autoregressive or inverse
autoregressive C-PTP)."""

from ptp.train.config import DistillConfig
from ptp.train.distillation import DistillResult, distill
from ptp.train.evaluation import evaluate, evaluate_adapter
from ptp.train.pretrain import train_autoregressive

__all__ = ["DistillConfig", "DistillResult", "distill", "evaluate", "evaluate_adapter", "train_autoregressive"]
