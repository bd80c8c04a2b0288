"""Our subclasses of the transformers/TRL trainers. Every override of a private (underscore) API lives here, so one
test (tests/test_trainers.py) fails loudly when an upgrade of TRL or transformers changes what we build on."""

from __future__ import annotations

import logging
import math
from collections import defaultdict

import torch
import trl.trainer.utils as trl_trainer_utils
from transformers import Trainer
from trl import DPOTrainer, GRPOTrainer, RewardTrainer, SFTTrainer
from trl.kernels.chunked_logprob import _use_triton as _compacts_where_triton_runs  # TRL's rule, never our replacement

from hf_recipes.callbacks import perplexity_of
from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")

# The private (underscore) names of transformers/TRL that the classes below override or read, by the class that
# defines them: tests/test_trainers.py checks each still exists with the signature we call, so an upgrade that
# changes one fails there, by name, instead of deep inside a training run.
PRIVATE_API = {
    "transformers.Trainer": {
        "_issue_warnings_after_load": "(self, load_result)",
        "_get_num_items_in_batch": "(self, batch_samples, device)",  # called on the curriculum's batches
    },
    "trl.DPOTrainer": {
        "_set_signature_columns_if_needed": "(self)",
        "_compute_loss": "(self, model, inputs, return_outputs)",
    },
    # Defined there, imported into trl.trainer.utils, where the fused LM head reads it and we replace it (below).
    "trl.kernels.chunked_logprob": {"_use_triton": "(device)"},
}
# Private instance attributes our trainers read (and RecipeDPOTrainer restores), set in TRL's own code.
PRIVATE_ATTRIBUTES = {
    "trl.DPOTrainer": ("_metrics", "_total_train_tokens", "_signature_columns"),
    "trl.GRPOTrainer": ("_metrics",),
}


def lm_head_skips_unlabelled_positions(device: torch.device) -> bool:
    """Whether TRL's fused LM head (SFT, DPO, GRPO) projects only the positions that have a label. TRL compacts them
    where it runs Triton and elsewhere projects every position, to keep tile shapes fixed for Neuron's compiler. On
    the CPU that put the 8,192-way LM head on every prompt token, where the labels are the answer's few tokens: a
    third of a gpt2-tiny GRPO step. The per-token log-probabilities are the same either way."""
    return device.type == "cpu" or _compacts_where_triton_runs(device)


trl_trainer_utils._use_triton = lm_head_skips_unlabelled_positions


class PerplexityLogMixin:
    """Adds `eval_perplexity` = exp(eval_loss) wherever the trainer logs an eval loss (console, TensorBoard, state)."""

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = perplexity_of(logs["eval_loss"])
        super().log(logs, *args, **kwargs)


class TiedWeightsLoadMixin:
    """No "missing keys: lm_head.weight" warning when the best checkpoint is loaded back at the end of training.

    Checkpoints leave out the output embedding tied to the input one; the in-place load updates both, so its absence
    is expected (GPT-2 does not list it in `_keys_to_ignore_on_save`, which is what the Trainer checks).
    """

    def _issue_warnings_after_load(self, load_result) -> None:
        tied = set()
        if getattr(self.model.config, "tie_word_embeddings", False):
            tied = {name for name, _ in self.model.named_parameters(remove_duplicate=False)} - {
                name for name, _ in self.model.named_parameters()
            }
        missing = [key for key in load_result.missing_keys if key not in tied]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))


class MuonOptimizerMixin:
    """Muon for the blocks' 2-D weights and AdamW for the rest when the arguments set `muon_learning_rate`."""

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.args.muon_learning_rate:
            from hf_recipes.optimizers import muon_with_adamw

            if self.is_fsdp_enabled or self.is_deepspeed_enabled:
                # Each process holds a shard of every matrix; Muon orthogonalizes whole matrices.
                raise RecipeError(
                    "muon_learning_rate: Muon needs whole weight matrices, and FSDP/DeepSpeed shard them; use "
                    "--muon_learning_rate 0 (AdamW) with this accelerate config, or DDP (recipes/accelerate/ddp.yaml)."
                )
            if getattr(model or self.model, "peft_config", None):
                # The trainable weights are LoRA's low-rank factors, not the blocks' matrices Muon was measured on.
                raise RecipeError("muon_learning_rate is for full training; with use_peft (LoRA) leave it unset")
            self.optimizer = muon_with_adamw(model or self.model, self.args.muon_learning_rate, self.args)
        return super().create_optimizer(model)


class PretrainTrainer(PerplexityLogMixin, TiedWeightsLoadMixin, MuonOptimizerMixin, Trainer):
    """The stock Trainer, logging eval perplexity next to eval loss; Muon for the blocks when `muon_learning_rate`;
    each training batch rewritten by the recipe's `BlockCurriculum` (evaluation batches stay natural)."""

    def __init__(self, *args, model=None, curriculum=None, **kwargs):
        # GPT2LMHeadModel's class name matches no loss type, so the Trainer would divide the loss by every label
        # where the causal-LM loss the model falls back to predicts all but each sequence's first: named, it divides
        # by the predicted tokens (1/512 of the loss at gpt2-tiny's blocks, 1/64 at 64-token warm-up sequences).
        if model is not None and getattr(model, "loss_type", None) is None:
            model.loss_type = "ForCausalLM"
        super().__init__(*args, model=model, **kwargs)
        self.curriculum = curriculum

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.curriculum is None:
            return batches, num_items_in_batch
        step, process = self.state.global_step, self.args.process_index
        batches = [self.curriculum(batch, step, stream=process * num_batches + i) for i, batch in enumerate(batches)]
        # Shorter sequences predict fewer tokens (no label for each one's first): count them again.
        return batches, self._get_num_items_in_batch(batches, device)


class RecipeSFTTrainer(PerplexityLogMixin, MuonOptimizerMixin, SFTTrainer):
    """TRL's SFTTrainer, logging eval perplexity next to eval loss; Muon for the blocks when `muon_learning_rate`."""


LN2 = math.log(2)  # the sigmoid DPO loss when policy and reference agree: -log sigmoid(0)


class RecipeDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer, stopping at the first training batch unless the reference is the starting policy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_reference = getattr(self.args, "check_reference", True)  # the recipe's; on with TRL's DPOConfig
        self.first_loss: float | None = None

    def _set_signature_columns_if_needed(self):
        # Keep the `length` column through column pruning: train_sampling_strategy group_by_length batches pairs of
        # similar length, so far fewer padding tokens are computed.
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, self.args.length_column_name]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # The first batch of a fresh run (not of a resumed one), as the optimizer is about to step on it.
        if self.first_loss is None and model.training and self.state.global_step == 0:
            loss = (result[0] if return_outputs else result).item()
            self.first_loss = loss if self.plain_sigmoid() else self.sigmoid_loss(model, inputs)
            logger.info(
                "First batch DPO loss %.6f (ln 2 = %.6f when the reference is the policy)", self.first_loss, LN2
            )
            if self.check_reference and abs(self.first_loss - LN2) > 1e-3:
                dropout = "" if self.args.disable_dropout else "; or dropout is on: keep disable_dropout: true"
                raise RecipeError(
                    f"the first batch's DPO loss is {self.first_loss:.6f}, not ln 2 = {LN2:.6f}: the reference "
                    f"model is not the starting policy{dropout} (leave ref_model_name_or_path unset, or set "
                    "check_reference: false when a different reference is intended)"
                )
        return result

    def plain_sigmoid(self) -> bool:
        return self.loss_types == ["sigmoid"] and not self.use_weighting

    def sigmoid_loss(self, model, inputs) -> float:
        """The batch's plain sigmoid DPO loss through TRL's own loss code, without gradient or logged metrics.

        For a mix such as loss_type [sigmoid, sft], whose total is not ln 2 at the start even when the reference is
        right, while its DPO part is.
        """
        saved = (self.loss_types, self.loss_weights, self.use_weighting, self._metrics, self._total_train_tokens)
        self.loss_types, self.loss_weights, self.use_weighting = ["sigmoid"], [1.0], False
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        try:
            with torch.no_grad():
                return self._compute_loss(model, inputs, return_outputs=False).item()
        finally:
            self.loss_types, self.loss_weights, self.use_weighting, self._metrics, self._total_train_tokens = saved


def positions_from_attention_mask(module, args, kwargs):
    """Forward pre-hook: with no position ids given, count positions over the attention mask (0 at each row's first
    real token), as `generate` does, instead of from the batch's first column."""
    mask, cache = kwargs.get("attention_mask"), kwargs.get("cache", kwargs.get("past_key_values"))
    fresh = cache is None or cache.get_seq_length() == 0
    if kwargs.get("position_ids") is None and mask is not None and mask.dim() == 2 and fresh:
        kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return args, kwargs


def count_positions_over_attention_mask(model) -> None:
    """Score left-padded rows at the positions `generate` gave them. TRL's GRPO scores each completion after its
    left-padded prompt without position ids, so a model with learned absolute positions (GPT-2) read every shorter
    prompt shifted by its padding: the policy it optimized was not the one that sampled (the first answer token of a
    65-token prompt padded to 432: log-probability -8.41 instead of -0.003)."""
    unwrapped = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model's own
    unwrapped.base_model.register_forward_pre_hook(positions_from_attention_mask, with_kwargs=True)


class RecipeGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer scoring completions at the positions they were sampled at, and stopping after the first
    optimizer step's loss unless the KL to the reference was ~0 then (the reference is the starting policy: the
    LoRA-disabled model, or a fresh copy of the start folder)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for model in (self.model, self.ref_model):
            if model is not None:
                count_positions_over_attention_mask(model)
        self.check_initial_kl = getattr(self.args, "check_initial_kl", True)  # the recipe's; on with TRL's GRPOConfig
        self.initial_kl: float | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.initial_kl is None and self.beta != 0.0 and model.training and self.state.global_step == 0:
            self.initial_kl = self._metrics["train"]["kl"][-1]  # appended by the loss just computed
            logger.info("First step KL to the reference: %.2e (0 when the reference is the starting policy)",
                        self.initial_kl)  # fmt: skip
            if self.check_initial_kl and abs(self.initial_kl) > 1e-4:
                raise RecipeError(
                    f"the first step's KL to the reference is {self.initial_kl:.3g}, not 0: the reference model is "
                    "not the starting policy (or dropout is on); set check_initial_kl: false if that is intended"
                )
        return loss


class RecipeRewardTrainer(RewardTrainer):
    """TRL's RewardTrainer (eval accuracy: the share of held-out pairs whose chosen answer scores higher). No
    perplexity in its logs: its loss ranks pairs, it is no per-token language-model loss."""

    @torch.no_grad()
    def held_out_pair_accuracy(self) -> float:
        """The share of held-out pairs whose chosen answer scores higher, counted pair by pair. TRL's eval_accuracy
        averages per-batch accuracies, so a short last batch (997 pairs in batches of 16: 5) weighs as much as a
        full one; this counts each pair once, across processes too."""
        model = self.model
        was_training = model.training
        model.eval()
        wins = []
        for batch in self.get_eval_dataloader():
            with self.autocast_smart_context_manager():
                scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            chosen, rejected = scores.squeeze(-1).float().chunk(2)  # TRL's collator: all chosen, then all rejected
            wins.append(self.accelerator.gather_for_metrics((chosen > rejected).float()))
        model.train(was_training)
        return torch.cat(wins).mean().item()
