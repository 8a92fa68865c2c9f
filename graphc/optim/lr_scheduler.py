"""Learning-rate schedules with torch.optim.lr_scheduler's names, defaults and closed forms.

A scheduler sets ``optimizer.lr``; a compiled train step feeds that rate as the ``optim.lr`` input
on its next call, so changing the rate never recompiles. As in torch, constructing a scheduler
sets the rate for epoch 0 and every ``step()`` moves to the next epoch (or iteration: a schedule
counts whatever you call ``step()`` for). Rates come from each schedule's closed form.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

from graphc.ir import GraphcError

from .optimizer import Optimizer


class LRScheduler:
    """Base class: ``lr_at(epoch)`` is the schedule; ``step()`` advances and applies it."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise GraphcError(f"{type(self).__name__} needs a graphc.optim optimizer, got {optimizer!r}")
        self.optimizer = optimizer
        group = optimizer.param_groups[0]
        if last_epoch == -1:
            group.setdefault("initial_lr", group["lr"])
        elif "initial_lr" not in group:
            raise GraphcError("resuming a schedule (last_epoch != -1) needs 'initial_lr' in the optimizer")
        self.base_lr = float(group["initial_lr"])
        self.last_epoch = last_epoch
        self._last_lr = [optimizer.lr]
        self.step()

    def lr_at(self, epoch: int) -> float:
        """The learning rate at ``epoch`` (the schedule's closed form)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rate for it."""
        self.last_epoch += 1
        lr = self.lr_at(self.last_epoch)
        self.optimizer.lr = lr
        self._last_lr = [lr]

    def get_last_lr(self) -> list[float]:
        """The rate set by the latest ``step()`` (a one-element list, as torch's)."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Plain JSON-able state (everything but the optimizer and callables)."""
        return {
            k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedulers") and not callable(v)
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the state and re-apply the current epoch's rate to the optimizer."""
        self.__dict__.update({k: v for k, v in state.items() if k != "schedulers"})
        self.optimizer.lr = self._last_lr[0]


class StepLR(LRScheduler):
    """``base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> float:
        """The rate at ``epoch``."""
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """``base_lr * gamma ** (number of milestones <= epoch)``."""

    def __init__(
        self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1, last_epoch: int = -1
    ):
        self.milestones, self.gamma = sorted(int(m) for m in milestones), float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> float:
        """The rate at ``epoch``."""
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class ExponentialLR(LRScheduler):
    """``base_lr * gamma ** epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> float:
        """The rate at ``epoch``."""
        return self.base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (SGDR without restarts)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if T_max <= 0:
            raise GraphcError(f"CosineAnnealingLR: T_max must be positive, got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> float:
        """The rate at ``epoch``."""
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class LinearLR(LRScheduler):
    """Linear warm-up (or decay): the factor moves from ``start_factor`` to ``end_factor``."""

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise GraphcError("LinearLR: start_factor must be in (0, 1] and end_factor in [0, 1]")
        if total_iters <= 0:
            raise GraphcError(f"LinearLR: total_iters must be positive, got {total_iters}")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> float:
        """The rate at ``epoch``."""
        progress = min(self.total_iters, epoch) / self.total_iters
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) * progress)


class LambdaLR(LRScheduler):
    """``base_lr * lr_lambda(epoch)`` (the function itself is not saved in checkpoints)."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float], last_epoch: int = -1):
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> float:
        """The rate at ``epoch``."""
        return self.base_lr * float(self.lr_lambda(epoch))


class SequentialLR(LRScheduler):
    """Run ``schedulers[i]`` from ``milestones[i-1]`` on, restarted at its epoch 0 (warm-up, then ...)."""

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = -1,
    ):
        if len(milestones) != len(schedulers) - 1:
            raise GraphcError("SequentialLR: expected one milestone fewer than schedulers")
        if any(s.optimizer is not optimizer for s in schedulers):
            raise GraphcError("SequentialLR: every scheduler must drive the same optimizer")
        self.schedulers = list(schedulers)
        self.milestones = [int(m) for m in milestones]
        # The children already stepped once when they were built; undo that as torch does.
        optimizer.lr = optimizer.param_groups[0]["initial_lr"]
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> float:
        """The rate at ``epoch``."""
        idx = bisect.bisect_right(self.milestones, epoch)
        start = self.milestones[idx - 1] if idx > 0 else 0
        return self.schedulers[idx].lr_at(epoch - start)
