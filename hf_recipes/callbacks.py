"""Callbacks every training stage adds: a hard stop on a non-finite loss, a checkpoint-and-exit on SIGTERM, and a
measured run-length estimate."""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time

from transformers import TrainerCallback

from hf_recipes.checkpoints import checkpoint_problems, checkpoints
from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")


def perplexity_of(loss: float) -> float:
    """exp(loss), capped so a diverged run reports a huge number instead of overflowing."""
    return math.exp(min(loss, 50.0))


class NonFiniteLossCallback(TrainerCallback):
    """Stop at the first logged NaN/inf loss with a clear error; the last complete checkpoint stays as it was.

    A non-finite gradient norm stops it too: that step's update may already have made the weights NaN, and the
    checkpoint of that step (saved right after this log) would keep them. Not under fp16, whose loss scaler skips
    inf-gradient steps on purpose. Needs `logging_nan_inf_filter=False` (our default): with the stock True, a NaN
    loss is logged as the mean of the steps before it.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss", *(() if args.fp16 else ("grad_norm",))):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                self.stop(f"{key} is {value} at step {state.global_step}", args)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # An update that overflows (an absurd learning rate) leaves this step's loss and gradients finite and the
        # weights inf: check them before the checkpoint this step is about to save.
        if control.should_save and model is not None and not all(p.isfinite().all() for p in model.parameters()):
            self.stop(f"the weights are not finite after step {state.global_step}", args)

    @staticmethod
    def stop(problem: str, args) -> None:
        last_good = next((c for c in checkpoints(args.output_dir) if not checkpoint_problems(c)), None)
        kept = f"; the last complete checkpoint is {last_good}" if last_good else "; no checkpoint was saved"
        raise RecipeError(f"training stopped: {problem} (try a lower learning_rate or max_grad_norm){kept}")


class SigtermCallback(TrainerCallback):
    """On SIGTERM (preemption, a scheduler's time limit, `kill`), save a checkpoint after the current step and stop.

    The handler only sets a flag: the step in flight finishes, the Trainer writes a complete checkpoint, and the recipe
    then calls `exit_if_stopped`, which exits with status 143 (128 + SIGTERM) before any final model, metrics or
    "complete" record is written. Running the same command again resumes from that checkpoint.
    """

    def __init__(self):
        self.received: int | None = None
        self.previous = None

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # Python only sets handlers on the main thread
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.received = signum  # nothing else here: logging or saving could re-enter code the signal interrupted

    def on_step_end(self, args, state, control, **kwargs):
        received = self.received is not None
        if args.world_size > 1:  # every process must stop at the same step, or the checkpoint's collectives hang
            import torch
            from accelerate.utils import reduce

            received = bool(reduce(torch.tensor([float(received)], device=args.device), reduction="sum").item())
            self.received = self.received or (signal.SIGTERM if received else None)
        if received:
            logger.warning("SIGTERM: saving checkpoint-%d and stopping", state.global_step)
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        # With save_total_limit 1 and load_best_model_at_end, the Trainer's end of training deletes every checkpoint
        # but the best: the one just saved to resume from would go, and the steps since the best would be redone.
        # The limit is already applied to this save (the rotation keeps the newest and the best); lifting it now only
        # skips that final cleanup, and the run exits right after.
        if self.received is not None and args.save_total_limit == 1:
            args.save_total_limit = None

    def on_train_end(self, args, state, control, **kwargs):
        if self.previous is not None:  # from here on SIGTERM ends the process at once: there is no step to save
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    def exit_if_stopped(self, trainer) -> None:
        """After `trainer.train()`: exit 143 with a one-line note naming the checkpoint when SIGTERM stopped it."""
        if self.received is None:
            return
        if trainer.is_world_process_zero():
            checkpoint = next((c for c in checkpoints(trainer.args.output_dir) if not checkpoint_problems(c)), None)
            print(
                f"stopped by SIGTERM at step {trainer.state.global_step}: {checkpoint} is saved; run the same command "
                "again to resume from it",
                file=sys.stderr,
                flush=True,
            )
        sys.exit(128 + self.received)


class RunLengthCallback(TrainerCallback):
    """After a few warm-up steps, log the measured speed and the estimated time to finish."""

    def __init__(self, tokens_per_step: int, measure_after: int = 5, measure_steps: int = 10):
        self.tokens_per_step = tokens_per_step
        self.measure_after = measure_after
        self.measure_steps = measure_steps
        self.started: tuple[int, float] | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        steps_done = state.global_step
        if self.started is None and steps_done >= self.measure_after:
            self.started = (steps_done, time.perf_counter())
        elif self.started and steps_done == self.started[0] + self.measure_steps:
            seconds_per_step = (time.perf_counter() - self.started[1]) / self.measure_steps
            remaining = (state.max_steps - steps_done) * seconds_per_step
            logger.info(
                "Measured %.2f s/step (%s tokens/s): about %.1f more minutes of training for %d steps",
                seconds_per_step,
                f"{self.tokens_per_step / seconds_per_step:,.0f}",
                remaining / 60,
                state.max_steps,
            )
