"""The epoch loop that training (:mod:`thyrofast.train.loop`) and pretraining
(:mod:`thyrofast.train.pretrain`) share.

:func:`fit` owns what is the same for both: the epochs from a resumed start,
the batches of each epoch, the learning-rate schedule per optimizer step, the
step count, the losses, deterministic CPU kernels, the progress bars and the
order of the end-of-epoch hooks (validation, checkpoint, the early-stop
decision).  What differs stays with the caller, as hooks: the sample order of
an epoch, what one step computes, how the model is judged and saved.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Sequence

from .determinism import deterministic as _deterministic_kernels
from .optim import Schedule

__all__ = ["Epoch", "FitResult", "Progress", "fit"]


@dataclasses.dataclass
class Epoch:
    """The epoch just trained, as the end-of-epoch hooks see it (a hook sets ``stop`` to end training)."""

    index: int                 # 0-based
    step: int                  # optimizer steps taken so far (all epochs)
    losses: list[float]        # one per step of this epoch
    started: float             # time.perf_counter() at the start of the epoch
    train_seconds: float       # the epoch's training steps alone
    bar: Any                   # the run's progress bar (set_postfix)
    stop: bool = False


@dataclasses.dataclass(frozen=True)
class Progress:
    """Progress bars: one counting epochs (``desc``) with one per epoch counting its batches;
    with ``position``, a single bar on that terminal line counting all batches (side-by-side runs)."""

    enabled: bool = True
    desc: str = "train"
    position: int | None = None


@dataclasses.dataclass(frozen=True)
class FitResult:
    step: int            # optimizer steps taken in all (resumed ones included)
    epochs_run: int      # epochs trained by this call
    stopped_early: bool


def fit(optimizer, schedule: Schedule, *, epochs: int, epoch_batches: Callable[[int], Sequence],
        train_step: Callable[[Any], float], end_of_epoch: Iterable[Callable[[Epoch], None]] = (),
        start_epoch: int = 0, step: int = 0, min_batch: int = 1, deterministic: bool = True,
        progress: Progress = Progress()) -> FitResult:
    """Train epochs ``start_epoch`` .. ``epochs - 1``.

    ``epoch_batches(epoch)`` puts the model in training mode and returns that
    epoch's batches (index tensors) in order; a batch shorter than
    ``min_batch`` is skipped (no step).  Before each step every parameter group
    of ``optimizer`` gets ``schedule``'s rate for the step (times its
    ``lr_scale``); ``train_step(batch)`` runs the step and returns its loss.
    After each epoch the ``end_of_epoch`` hooks run in order with its
    :class:`Epoch`; training ends when one of them has set ``stop``.
    ``deterministic``: torch's deterministic algorithms while training (CPU).
    """
    from tqdm.auto import tqdm

    batch_bar = progress.position is not None
    if batch_bar:  # counts batches: an epoch on one shared core takes minutes
        bar = None  # created on the first epoch, when the batch count is known
    else:
        bar = tqdm(range(start_epoch, epochs), desc=progress.desc, unit="epoch", disable=not progress.enabled,
                   initial=start_epoch, total=epochs, dynamic_ncols=True)
    hooks = list(end_of_epoch)
    run, stopped = 0, False
    try:
        with _deterministic_kernels(deterministic):
            for epoch in (range(start_epoch, epochs) if batch_bar else bar):
                t0 = time.perf_counter()
                batches = epoch_batches(epoch)
                if batch_bar and bar is None:
                    n = len(batches)
                    bar = tqdm(total=epochs * n, initial=start_epoch * n, desc=progress.desc, unit="batch",
                               disable=not progress.enabled, position=progress.position, leave=False,
                               dynamic_ncols=True)
                losses: list[float] = []
                inner = tqdm(batches, desc=f"epoch {epoch + 1}", unit="batch", leave=False,
                             disable=not progress.enabled or batch_bar, dynamic_ncols=True)
                for idx in inner:
                    if batch_bar:
                        bar.update(1)
                    if len(idx) < min_batch:
                        continue
                    schedule.apply(optimizer, step)
                    losses.append(train_step(idx))
                    step += 1
                    inner.set_postfix(loss=f"{losses[-1]:.3f}")
                inner.close()
                state = Epoch(index=epoch, step=step, losses=losses, started=t0,
                              train_seconds=time.perf_counter() - t0, bar=bar)
                run += 1
                for hook in hooks:
                    hook(state)
                if state.stop:
                    stopped = True
                    break
    finally:
        if bar is not None:
            bar.close()
    return FitResult(step=step, epochs_run=run, stopped_early=stopped)
