"""The shared training loop for every model family: `Trainer(task, out_dir).fit()`.

`zoo.trainable.TrainTask` says what to train; this package decides how: optimiser and
LR schedule, gradient clipping, EMA, autocast, seeded resumable data order, atomic
checkpoints with exact resume, Ctrl-C and NaN safety, torchrun DDP, progress bar and
`log.jsonl`.
"""

from zoo.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from zoo.training.data import ResumableBatchSampler
from zoo.training.ema import EMA
from zoo.training.optim import build_optimizer, build_scheduler, lr_multiplier
from zoo.training.trainer import NonFiniteLossError, RunExistsError, Trainer, TrainResult

__all__ = [
    "EMA",
    "NonFiniteLossError",
    "ResumableBatchSampler",
    "RunExistsError",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "lr_multiplier",
]
