"""graphc.optim: optimizers that append their update rule to the training graph, and LR schedules."""

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import LR_INPUT, Optimizer
from .sgd import SGD

__all__ = ["LR_INPUT", "SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
