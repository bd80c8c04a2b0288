"""Recount a reward model folder's held-out pair accuracy pair by pair, on the pairs its recipe holds out, read
where the folder was trained to read (its config's reward_read_at).

TRL's eval_accuracy (what reward folders before the count was added report) averages per-batch accuracies, so the
last, short batch weighs as much as a full one; `make reward` now writes the count as `pair_accuracy`.

python benchmarks/reward_pair_accuracy.py outputs/gpt2-tiny/reward [--config recipes/gpt2-tiny/reward.yaml]
"""

from __future__ import annotations

import argparse
import tempfile

from datasets import Dataset
from transformers import AutoModelForSequenceClassification

from hf_recipes.config import parse_stage
from hf_recipes.rewards import reads_at_answer_end
from hf_recipes.stages.chat_inputs import preference_data
from hf_recipes.stages.reward import scored_at_answer_end
from hf_recipes.trainers import RecipeRewardTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a reward model folder (make reward's output)")
    parser.add_argument("--config", default="recipes/gpt2-tiny/reward.yaml", help="the recipe it was trained with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        argv = ["--config", args.config, "--model_name_or_path", args.folder, "--output_dir", scratch]
        data_args, model_args, training_args = parse_stage("reward", [*argv, "--report_to", "none"])
        data = preference_data(data_args, model_args, training_args, "reward modeling")
        model = AutoModelForSequenceClassification.from_pretrained(args.folder)
        rows = scored_at_answer_end(data.eval_rows) if reads_at_answer_end(model.config) else data.eval_rows
        held_out = Dataset.from_list(rows)
        trainer = RecipeRewardTrainer(
            model=model, args=training_args, processing_class=data.tokenizer, train_dataset=held_out,
            eval_dataset=held_out,
        )  # fmt: skip
        counted = trainer.held_out_pair_accuracy()
        batch_mean = trainer.evaluate()["eval_accuracy"]
    print(f"{len(data.eval_rows)} held-out pairs: pair accuracy {counted:.4f} (TRL's batch mean {batch_mean:.4f})")


if __name__ == "__main__":
    main()
