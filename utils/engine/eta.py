"""How long the rest of a run will take, from the epochs timed so far: the end of each epoch's line in the log.

An epoch's wall time (training, validation loss, checkpoints) is timed apart from its mAP evaluation, which comes
only every --eval-period epochs; the estimate is the mean epoch times the epochs left, plus the mean evaluation
times the evaluations left (before the first evaluation, their number is named instead of a guess).
"""
import time
from typing import List, Optional


def evaluated_epochs(epochs: int, eval_period: Optional[int], after: int) -> int:
    """How many of the epochs after epoch number `after` (1-based) evaluate the mAP: every `eval_period`-th and
    the last (none with a period of 0)."""
    if not eval_period:
        return 0
    return sum(1 for e in range(after + 1, epochs + 1) if e % eval_period == 0 or e == epochs)


def minutes(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 60 else f"{seconds / 60:.1f} min"


class RunClock:
    """The wall time of this process's epochs and evaluations, and the estimate of the time left."""

    def __init__(self, epochs: int, eval_period: Optional[int], clock=time.monotonic):
        self.epochs, self.eval_period, self.clock = epochs, eval_period, clock
        self.started: Optional[float] = None
        self.epoch_seconds: List[float] = []
        self.eval_seconds: List[float] = []
        self._eval_now = 0.0

    def start_epoch(self) -> None:
        self.started, self._eval_now = self.clock(), 0.0

    def evaluated(self, seconds: float) -> None:
        """The current epoch's mAP evaluation took `seconds`."""
        self._eval_now += seconds
        self.eval_seconds.append(seconds)

    def end_epoch(self, epoch: int) -> str:
        """Epoch number `epoch` (1-based) is done: the text the epoch's line ends with, '; eta 4.2 min' (with
        the run's whole estimated time after this process's first epoch); '' when nothing was timed."""
        if self.started is None:
            return ""
        self.epoch_seconds.append(self.clock() - self.started - self._eval_now)
        self.started = None
        left = self.epochs - epoch
        if left <= 0:
            return ""
        evals = evaluated_epochs(self.epochs, self.eval_period, epoch)
        seconds = left * sum(self.epoch_seconds) / len(self.epoch_seconds)
        untimed = ""
        if evals and self.eval_seconds:
            seconds += evals * sum(self.eval_seconds) / len(self.eval_seconds)
        elif evals:
            untimed = f" + {evals} mAP evaluation{'s' if evals > 1 else ''}"
        text = f"; eta {minutes(seconds)}{untimed}"
        if len(self.epoch_seconds) == 1:
            epochs = f"{left} epochs" if left > 1 else "1 epoch"
            text += (f" (estimate for the {epochs} left at {minutes(self.epoch_seconds[0])} each; each epoch's line "
                     "updates it)")
        return text
