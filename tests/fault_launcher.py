"""Test-only launcher: run a recipe's `main` in this process with a fault injected, so it dies as a real run would.

    python tests/fault_launcher.py pretrain [recipe args ...]     (a stage of hf_recipes.stages)

Faults come from environment variables, so the recipe's own arguments pass through untouched:

    FAULT_STEP_DELAY=<seconds>  sleep after every optimizer step, so a test can land a signal between checkpoints
    FAULT_KILL_IN_SAVE=<step>   SIGKILL this process while checkpoint-<step> is being written: after its weights,
                                optimizer and scheduler, before its RNG state and trainer_state.json

The recipes themselves carry no test hooks: everything is patched here, on the library classes.
"""

import importlib
import os
import signal
import sys
import time
from pathlib import Path


def inject_faults() -> None:
    from transformers import Trainer
    from transformers.trainer_callback import CallbackHandler

    delay = float(os.environ.get("FAULT_STEP_DELAY", "0"))
    if delay:
        on_step_end = CallbackHandler.on_step_end

        def slow_step_end(self, *args, **kwargs):
            time.sleep(delay)
            return on_step_end(self, *args, **kwargs)

        CallbackHandler.on_step_end = slow_step_end

    kill_step = os.environ.get("FAULT_KILL_IN_SAVE")
    if kill_step:
        save_rng_state = Trainer._save_rng_state

        def killed_while_saving(self, output_dir):
            if Path(output_dir).name == f"checkpoint-{kill_step}":
                os.kill(os.getpid(), signal.SIGKILL)
            return save_rng_state(self, output_dir)

        Trainer._save_rng_state = killed_while_saving


if __name__ == "__main__":
    from hf_recipes.runtime import run_recipe

    stage = importlib.import_module(f"hf_recipes.stages.{sys.argv[1]}")
    inject_faults()
    run_recipe(stage.main, sys.argv[2:])
