"""What every training stage does around its own steps, written once.

start: parse the recipe, logging, the precision line, seed, the Hub settings (checked before anything loads),
skip-if-finished, the output folder (on the main process first), the checkpoint to resume from.
then, for the stage: the record of the run, its callbacks, train() with SIGTERM exit and timing, the LoRA merge and
save, and finish: metrics, plots, no pickles, the complete record, the push.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_recipes.callbacks import NonFiniteLossCallback, SigtermCallback
from hf_recipes.checkpoints import checkpoint_step, last_complete_checkpoint, resume_record
from hf_recipes.folder_reuse import prepare_output_dir, skip_if_finished
from hf_recipes.run_folder import ADAPTER_FOLDER, code_commit, input_fingerprints, write_metrics, write_run_config
from hf_recipes.runtime import RecipeError, setup_logging
from hf_recipes.tracking import require_trackers, tracking_record

logger = logging.getLogger("hf_recipes")
# A chat stage's own results: (final evaluation, held-out scores before and after) -> (metrics, summary line).
ChatResults = Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], str]]
# Argument fields that name a model folder a stage reads: its weights' fingerprints are the run's inputs.
INPUT_MODEL_FIELDS = ("model_name_or_path", "ref_model_name_or_path")


@dataclass
class StageRun:
    """One training stage's run between `start` and `finish`: its arguments, folder and what it resumes from."""

    stage: str
    arguments: tuple[Any, ...]  # as parsed: data, model, training arguments (training last)
    inputs: dict[str, str]
    push_target: PushTarget | None
    output_dir: Path
    resume_dir: Path | None
    sigterm: SigtermCallback = field(default_factory=SigtermCallback)
    train_seconds: float = 0.0
    scores_before: dict[str, Any] = field(default_factory=dict)  # held-out scores of the start model (chat stages)
    score_after: Callable[[Any], dict[str, Any]] | None = None  # scores the trained model the same way

    @property
    def training_args(self):
        return self.arguments[-1]

    @property
    def first_step(self) -> int:
        """The optimizer step training starts from: 0, or the resumed checkpoint's."""
        return checkpoint_step(self.resume_dir)

    def record(self, **extra: Any) -> None:
        """run_config.yaml (one writer when several processes train): resolved recipe, inputs, versions, commit."""
        if self.training_args.should_save:
            write_run_config(self.output_dir, *self.arguments, stage=self.stage, inputs=self.inputs, **extra)

    def callbacks(self, *extra) -> list:
        """NaN/inf stop, the stage's own callbacks, and the SIGTERM checkpoint-and-exit."""
        return [NonFiniteLossCallback(), *extra, self.sigterm]

    def trainer_inputs(self, tokenizer, train_rows: list[dict], eval_rows: list[dict] | None = None, **override):
        """The keyword arguments every TRL trainer here is built with: the run's training arguments, the rows as
        datasets, the tokenizer and the callbacks (NaN/inf stop, SIGTERM checkpoint); `override` replaces any."""
        from datasets import Dataset

        inputs = {
            "args": self.training_args,
            "train_dataset": Dataset.from_list(train_rows),
            "processing_class": tokenizer,
            "callbacks": self.callbacks(),
        }
        if eval_rows is not None:
            inputs["eval_dataset"] = Dataset.from_list(eval_rows)
        return inputs | override

    def train(self, trainer):
        """trainer.train() from the checkpoint to resume (if any); exit 143 after SIGTERM's checkpoint. The training
        time recorded leaves out evaluations (the initial one too): they are not training throughput. The run's record
        is written first: a run killed in training still says what it was."""
        self.record()
        if self.resume_dir is not None:
            logger.info("Resuming from %s", self.resume_dir)
        started = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(self.resume_dir) if self.resume_dir else None)
        self.sigterm.exit_if_stopped(trainer)  # no final model, metrics or complete record from a run cut short
        evaluating = seconds_spent_evaluating(trainer.state.log_history, self.first_step if self.resume_dir else -1)
        self.train_seconds = time.perf_counter() - started - evaluating
        return result

    def chat_trainer(
        self, trainer_class, model, tokenizer, held_out: list[dict], train_rows, eval_rows=None, **inputs
    ):
        """SFT, DPO, GRPO: score the start model on the held-out conversations (unless eval_before_training is off or
        the run resumes), keep the scorer for the trained model, and build the stage's trainer from `trainer_inputs`
        plus the stage's own `inputs` (peft_config, ref_model, reward_funcs, ...; they may replace any)."""
        from hf_recipes.evaluation import scores_of_stage

        data_args = self.arguments[0]
        batch_size = self.training_args.per_device_eval_batch_size
        score = functools.partial(scores_of_stage, tokenizer=tokenizer, conversations=held_out,
                                  data_args=data_args, batch_size=batch_size)  # fmt: skip
        if data_args.eval_before_training and self.resume_dir is None:
            self.scores_before = score(model, when="before")
        self.score_after = functools.partial(score, when="after")
        return trainer_class(model=model, **self.trainer_inputs(tokenizer, train_rows, eval_rows, **inputs))

    def train_chat_model(self, trainer, tokenizer, model_args, results: ChatResults, plot, evaluate: bool = True):
        """SFT, DPO, GRPO: train(), the final held-out evaluation (unless `evaluate` is off), then on the main process
        the model saved (`save_chat_model`), scored as before training, and the run finished with the metrics and
        summary line that `results(final_eval, scores)` makes of them (the held-out scores lead the metrics)."""
        result = self.train(trainer)
        final_eval = trainer.evaluate() if evaluate else {}
        if not trainer.is_world_process_zero():
            return
        scores = self.scores_before | self.score_after(self.save_chat_model(trainer, tokenizer, model_args))
        metrics, summary = results(final_eval, scores)
        self.finish(trainer, result, {**scores, **metrics}, plot, summary)

    def save_chat_model(self, trainer, tokenizer, model_args):
        """Save the trained model with its tokenizer and return it; LoRA: the adapter in adapter/ and the merged model
        beside it, so the folder loads as a plain model."""
        from hf_recipes.modeling import merge_lora

        if model_args.use_peft:
            adapter = str(self.output_dir / ADAPTER_FOLDER)
            trainer.model.save_pretrained(adapter)
            model = merge_lora(model_args.model_name_or_path, adapter, model_args.model_revision)
        else:
            model = trainer.model
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(self.output_dir)
        tokenizer.save_pretrained(self.output_dir)
        return model

    def finish(self, trainer, result, metrics: dict[str, Any], plot: Callable[[list, Path], Any], summary: str):
        """Main process: metrics.json, loss plot, no pickle left, the complete record, the summary line, the push."""
        write_metrics(
            self.output_dir,
            {
                **metrics,
                "train_loss": result.training_loss,
                "train_steps": result.global_step,
                "train_seconds": self.train_seconds,
                **resume_record(self.first_step),
            },
        )
        plot(trainer.state.log_history, self.output_dir / "plots" / "loss.png")
        remove_pickled_args(self.output_dir)
        tracking = tracking_record(self.training_args)
        self.record(complete=True, **({"tracking": tracking} if tracking else {}))
        logger.info("%s; model folder: %s", summary, self.output_dir)
        if self.push_target:
            self.push_target.push(self.output_dir)


def start(stage: str, argv: list[str], starts_from: str | None = None) -> StageRun | None:
    """Parse the stage's recipe and prepare its run; None when its folder already holds this finished run.

    `starts_from` names the model folder a stage needs (model_name_or_path is then required), for its error.
    """
    from transformers import set_seed

    from hf_recipes.config import parse_stage

    code_commit()  # now, before a training run that may outlive the checkout's HEAD
    arguments = parse_stage(stage, argv)
    training_args = arguments[-1]
    setup_logging(training_args.process_index == 0)
    logger.info("%s", training_args.precision.describe())  # e.g. fp32 on a CPU without native bf16
    set_seed(training_args.seed)
    push_target = take_hub_settings(training_args)  # the Trainer never pushes; a push that cannot work fails now
    require_trackers(training_args)
    inputs = input_fingerprints(*(getattr(group, name, None) for group in arguments for name in INPUT_MODEL_FIELDS))
    overwrite = training_args.overwrite_output_dir
    if skip_if_finished(training_args.output_dir, *arguments, inputs=inputs, overwrite=overwrite):
        return None
    if starts_from and not getattr(arguments[1], "model_name_or_path", None):
        raise RecipeError(f"model_name_or_path is required: {starts_from}")
    with training_args.main_process_first(desc="output folder"):  # one process deletes old checkpoints
        output_dir = prepare_output_dir(training_args, *arguments[:-1], inputs=inputs)
    resume_dir = None if overwrite else last_complete_checkpoint(output_dir)
    return StageRun(stage, arguments, inputs, push_target, output_dir, resume_dir)


def run_stage(stage: str, argv: list[str], train: Callable[[StageRun], None], starts_from: str | None = None) -> None:
    """A training stage from its command line: `start`, then `train(run)` unless the run is already finished."""
    run = start(stage, argv, starts_from)
    if run is not None:
        train(run)


def run_export(stage: str, argv: list[str], export: Callable[[Any, dict[str, str]], None]) -> None:
    """Run an export stage (quantize, gguf): parse its arguments, set up logging and seed, skip it when its folder
    already holds this finished export of the same model, else call `export(args, input_fingerprints)`."""
    from transformers import set_seed

    from hf_recipes.config import parse_stage

    (args,) = parse_stage(stage, argv)
    setup_logging()
    set_seed(args.seed)
    inputs = input_fingerprints(args.model_name_or_path)
    if not skip_if_finished(args.output_dir, args, inputs=inputs):
        export(args, inputs)


def seconds_spent_evaluating(log_history: list[dict], after_step: int = 0) -> float:
    """Total eval runtime logged after `after_step` (to subtract from training wall time)."""
    return sum(entry.get("eval_runtime", 0.0) for entry in log_history if entry.get("step", 0) > after_step)


@dataclass(frozen=True)
class PushTarget:
    """Where a stage pushes its finished folder (through hub.push_folder, never through the Trainer)."""

    repo_id: str
    private: bool
    token: str

    def push(self, folder: Path | str):
        from hf_recipes.hub import push_folder

        return push_folder(folder, self.repo_id, private=self.private, token=self.token)


def take_hub_settings(training_args) -> PushTarget | None:
    """Take the Hub settings out of the training arguments, and check a push can work before anything loads.

    The Trainer pickles hub_token into training_args.bin; given push_to_hub it creates the repository (public
    unless hub_private_repo) when built and uploads every checkpoint with runs/ and training_args.bin. So the
    Trainer never sees either: only our filtered push_folder pushes, once, at the end.
    """
    token = getattr(training_args, "hub_token", None)
    training_args.hub_token = None
    if not training_args.push_to_hub:
        return None
    training_args.push_to_hub = False
    from hf_recipes.hub import check_can_write

    repo_id = training_args.hub_model_id
    return PushTarget(repo_id, bool(training_args.hub_private_repo), check_can_write(repo_id, token))


def remove_pickled_args(output_dir: Path | str) -> None:
    """Delete training_args.bin: a pickle (unsafe to load) that nothing of ours reads."""
    for path in Path(output_dir).glob("**/training_args.bin"):
        path.unlink()
