"""Tag2TextTrainer: a transformers Trainer whose loss combines tagging, captioning (LM), ITC and ITM.

* Tagging (asymmetric loss, gamma_neg 7, gamma_pos 0, clip 0.05, summed) and the label-smoothed LM loss come
  from the model's forward, run through the (possibly DDP-wrapped) model so that gradients synchronise.
* ITC and ITM (:mod:`.losses`) use the unwrapped model's ``get_image_features``/``get_text_features``/
  ``get_itm_logits``; DDP still averages their gradients because its hooks sit on the parameters. This needs
  ``ddp_find_unused_parameters=False`` (the default set here) and every trainable parameter to get a gradient
  every step, so modules that serve only objectives weighted 0 are frozen (:func:`freeze_for_inactive_losses`).
* Each component is logged (``loss_tag``, ``loss_lm``, ``loss_itc``, ``loss_itm``; ``eval_loss_*`` in
  evaluation) averaged over the steps since the last log and over the processes.
* A NaN or infinite component stops training: a checkpoint of the last finite weights is saved, then
  :class:`NonFiniteLossError` names the step and the component(s).
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict

import torch
from transformers import Trainer, TrainerCallback

from .losses import LOSS_COMPONENTS, LossWeights, distributed_world, image_text_contrastive_loss, \
    image_text_matching_loss

logger = logging.getLogger(__name__)

# Inputs the collator adds for the trainer, not for the model's forward.
TRAINER_ONLY_KEYS = ("text_input_ids", "text_attention_mask", "sample_ids", "image_load_failures")


class NonFiniteLossError(RuntimeError):
    """A loss component became NaN or infinite; the message names the step, the component and the checkpoint."""


class EpochCallback(TrainerCallback):
    """Tell the collator (and a streamed dataset) which epoch starts: their per-sample randomness depends on it.

    On resume the Trainer restores ``state.epoch`` (e.g. 1.5) before this runs, so the floor is the epoch being
    resumed.
    """

    def __init__(self, *targets):
        self.targets = [t for t in targets if t is not None]

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(math.floor((state.epoch or 0.0) + 1e-6))
        for target in self.targets:
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
            else:
                target.epoch = epoch
        return control


def _trained_by_active_losses(name: str, weights: LossWeights, tagging_layers: int) -> bool:
    """Whether an active objective sends a gradient to parameter ``name`` (see the modes of the encoder)."""
    tag, lm, itc, itm = (weights.active(k) for k in LOSS_COMPONENTS)
    if name.startswith("tagging_head."):
        return tag
    if name.startswith(("vision_proj.", "text_proj.", "alignment.")):
        return itc
    if name.startswith("itm_head."):
        return itm
    if name.startswith("text_decoder."):
        return lm
    if name.startswith("text_encoder.") and not (lm or itm):
        # Without a multimodal pass the encoder runs only as the tagging head (cross-attention and feed-forward
        # of its first layers) and as ITC's text encoder (embeddings, self-attention, feed-forward).
        parts = name.split(".")
        if parts[1] == "embeddings":
            return itc
        if parts[1] == "encoder" and parts[2] == "layer":
            in_tagging = tag and int(parts[3]) < tagging_layers
            if parts[4] == "attention":
                return itc
            if parts[4] == "crossattention":
                return in_tagging
            return itc or in_tagging
    return True


def freeze_for_inactive_losses(model, weights: LossWeights) -> list[str]:
    """Freeze the parameters that only objectives with weight 0 would train; returns their names.

    Under DDP without ``find_unused_parameters`` a trainable parameter that gets no gradient stalls the
    gradient reduction, and ``find_unused_parameters=True`` cannot see the ITC/ITM computation (it runs
    outside the wrapped forward). Freezing what no active loss reaches avoids both.
    """
    tagging_layers = model.config.tagging_config.num_hidden_layers
    frozen = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and not _trained_by_active_losses(name, weights, tagging_layers):
            parameter.requires_grad_(False)
            frozen.append(name)
    if frozen:
        logger.info("froze %d parameter tensors that only zero-weighted losses would train", len(frozen))
    return frozen


class Tag2TextTrainer(Trainer):
    """Trainer for Tag2Text pre-training and fine-tuning.

    Args (besides the Trainer's):
        loss_weights: :class:`~.losses.LossWeights`; default: ``args.loss_weights``/``args.tag_loss_scale`` of
            :class:`~.arguments.Tag2TextTrainingArguments`, else all 1 with the released tag-loss rescaling.
        task_evaluator: an :class:`~.evaluation.Tag2TextEvaluator`; evaluation then also reports tagging,
            captioning and retrieval metrics on the evaluation data (computed on the main process).
        eval_data_collator: collator of evaluation batches (default: the training one).

    The collator must provide the model inputs plus, for ITC/ITM, ``text_input_ids``/``text_attention_mask``
    (``[CLS]`` first) and optionally ``sample_ids`` (see :class:`~.collator.Tag2TextCollator`).
    """

    # compute_loss returns a mean over the batch, not a sum normalised by num_items_in_batch.
    loss_is_scaled_for_ga = False

    def __init__(self, model=None, args=None, *pos, loss_weights: LossWeights | None = None, task_evaluator=None,
                 eval_data_collator=None, **kwargs):
        if loss_weights is None:
            loss_weights = LossWeights.parse(getattr(args, "loss_weights", None),
                                             getattr(args, "tag_loss_scale", "lm")) if args is not None else LossWeights()
        self.loss_weights = loss_weights
        self.task_evaluator = task_evaluator
        self.eval_data_collator = eval_data_collator
        if args is not None:
            # Dataset columns are images/captions/tags, not forward arguments: the collator builds the inputs.
            args.remove_unused_columns = False
            if args.ddp_find_unused_parameters is None:
                args.ddp_find_unused_parameters = False
            elif args.ddp_find_unused_parameters:
                raise ValueError(
                    "ddp_find_unused_parameters=True does not work with Tag2TextTrainer: ITC/ITM run outside the "
                    "DDP-wrapped forward. Leave it unset; modules of zero-weighted losses are frozen instead."
                )
            if args.gradient_checkpointing and not args.gradient_checkpointing_kwargs:
                # Reentrant checkpointing would mark shared parameters ready twice under DDP (the encoder runs
                # in several modes per step).
                args.gradient_checkpointing_kwargs = {"use_reentrant": False}
            if args.label_names is None:
                args.label_names = ["labels"]
        if model is not None:
            self.frozen_parameters = freeze_for_inactive_losses(model, loss_weights)
        super().__init__(model, args, *pos, **kwargs)
        # The loss ignores num_items_in_batch; make the Trainer neither inject it nor rescale for it.
        self.model_accepts_loss_kwargs = False
        self._components = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._extras = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.image_load_failures = 0
        self.last_loss_components = {}
        self.samples_seen = 0
        self.last_itc_global_batch = None

    # -- loss -------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        text_ids = inputs.pop("text_input_ids", None)
        text_mask = inputs.pop("text_attention_mask", None)
        sample_ids = inputs.pop("sample_ids", None)
        failures = inputs.pop("image_load_failures", None)
        split = "train" if model.training else "eval"
        core = self.accelerator.unwrap_model(model)
        weights = self.loss_weights

        outputs = model(**inputs, return_dict=True)
        batch_size = outputs.image_embeds.shape[0]
        components = {}
        if outputs.loss_tag is not None:
            components["tag"] = outputs.loss_tag
        if outputs.loss_lm is not None:
            components["lm"] = outputs.loss_lm

        if weights.active("itc") or weights.active("itm"):
            if text_ids is None:
                # A plain batch: the alignment text is the caption with [CLS] in place of [DEC].
                text_ids = inputs["input_ids"].clone()
                text_ids[:, 0] = core.config.text_config.cls_token_id
                text_mask = inputs.get("attention_mask")
            with torch.set_grad_enabled(torch.is_grad_enabled() and weights.active("itc")):
                image_features = core.get_image_features(image_embeds=outputs.image_embeds).pooler_output
                text_features = core.get_text_features(text_ids, text_mask).pooler_output
                image_features = torch.nn.functional.normalize(image_features, dim=-1)
                text_features = torch.nn.functional.normalize(text_features, dim=-1)
                contrastive = image_text_contrastive_loss(image_features, text_features, core.logit_temperature,
                                                          sample_ids=sample_ids)
            self.last_itc_global_batch = contrastive.global_batch_size
            if weights.active("itc"):
                components["itc"] = contrastive.loss
            self._extras[split]["itc_global_batch"].append(torch.tensor(float(contrastive.global_batch_size)))
            if weights.active("itm"):
                itm_ids = text_ids.clone()
                itm_ids[:, 0] = core.config.text_config.enc_token_id
                components["itm"] = image_text_matching_loss(core, outputs.image_embeds, itm_ids, text_mask,
                                                             contrastive).loss

        loss = weights.combine(components, batch_size)
        for name, value in components.items():
            self._components[split][name].append(value.detach().float())
        # Raw (unweighted) values of this batch, for callers and tests.
        self.last_loss_components = {name: float(value.detach()) for name, value in components.items()}
        if split == "train":
            self.samples_seen += batch_size
            if failures is not None:
                self._extras[split]["image_load_failures"].append(failures.sum().float().detach().cpu())
            self._check_finite(loss, components)
        return (loss, outputs) if return_outputs else loss

    def _check_finite(self, loss, components: dict) -> None:
        names = list(components) + ["total"]
        values = torch.stack([v.detach().float().reshape(()) for v in components.values()] + [loss.detach().float()])
        bad = (~torch.isfinite(values)).float()
        if distributed_world()[1] > 1:
            # Every process must stop together (a lone process raising would leave the others waiting in a
            # collective), so the flags are summed over processes every step.
            bad = self.accelerator.reduce(bad.to(self.accelerator.device), reduction="sum")
        if not bool(bad.any()):
            return
        step = self.state.global_step + 1
        which = [n for n, b in zip(names, bad.tolist()) if b]
        local = ", ".join(f"loss_{n}={v:.4g}" for n, v in zip(names, values.tolist()))
        saved = None
        try:
            self._save_checkpoint(self.model_wrapped, trial=None)
            saved = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
        except Exception as error:  # saving is best effort; the error below is what matters
            logger.error("could not save a checkpoint after the non-finite loss: %s", error)
        components = ", ".join(f"loss_{n}" for n in which if n != "total") or "the weighted total"
        message = (
            f"non-finite loss at training step {step} (epoch {self.state.epoch or 0:.2f}) in {components} "
            f"(this process: {local}); "
            + (f"the weights before this step are saved in {saved}" if saved else "no checkpoint could be saved")
            + ". Lower --learning-rate, check the data of this step, or resume with --resume-from-checkpoint."
        )
        logger.error(message)
        raise NonFiniteLossError(message)

    # -- logging ----------------------------------------------------------------------------------------------

    def _reduced_means(self, split: str) -> dict:
        """Mean of each component since the last call, averaged over processes (a collective: every process
        calls it at the same point)."""
        result = {}
        device = self.accelerator.device
        for name in LOSS_COMPONENTS:
            values = self._components[split].pop(name, None)
            if values:
                mean = torch.stack(values).mean().to(device)
                result[f"loss_{name}"] = self.accelerator.reduce(mean, reduction="mean").item()
        extras = self._extras[split]
        if extras.get("itc_global_batch"):
            result["itc_global_batch"] = float(torch.stack(extras.pop("itc_global_batch")).mean())
        if "image_load_failures" in extras:
            count = torch.stack(extras.pop("image_load_failures")).sum().to(device)
            count = int(self.accelerator.reduce(count, reduction="sum").item())
            self.image_load_failures += count
            result["image_load_failures"] = self.image_load_failures
        extras.clear()
        return result

    def log(self, logs, start_time=None):
        if "loss" in logs:  # a training log (evaluation adds its components in evaluation_loop)
            logs.update({k: round(v, 4) if isinstance(v, float) else v for k, v in self._reduced_means("train").items()})
            model = self.accelerator.unwrap_model(self.model)
            if hasattr(model, "logit_temperature"):
                logs["itc_temperature"] = round(float(model.logit_temperature.detach()), 5)
        super().log(logs, start_time)

    # -- evaluation -------------------------------------------------------------------------------------------

    def get_eval_dataloader(self, eval_dataset=None):
        """Evaluation batches use ``eval_data_collator`` (no augmentation, first caption) when one is given."""
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        training_collator = self.data_collator
        self.data_collator = self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = training_collator

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        self._components["eval"].clear()
        self._extras["eval"].clear()
        # Only the losses are gathered: logits of a captioning model over a whole eval set are large and unused.
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=True, ignore_keys=ignore_keys,
                                         metric_key_prefix=metric_key_prefix)
        for name, value in self._reduced_means("eval").items():
            output.metrics[f"{metric_key_prefix}_{name}"] = value
        if self.task_evaluator is not None:
            output.metrics.update(self._task_metrics(dataloader.dataset, metric_key_prefix))
        return output

    def _task_metrics(self, dataset, prefix: str) -> dict:
        """Tagging, captioning and retrieval metrics, computed on the main process and shared with the others."""
        metrics = {}
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            was_training = model.training
            results = self.task_evaluator.evaluate(model, dataset)
            model.train(was_training)
            metrics = {f"{prefix}_{k}": v for k, v in results.scalars().items()}
        if distributed_world()[1] > 1:
            import torch.distributed as dist

            holder = [metrics]
            dist.broadcast_object_list(holder, src=0)
            metrics = holder[0]
        return metrics

    def floating_point_ops(self, inputs) -> int:
        """The Trainer's estimate (6 x main-input elements x non-embedding parameters), with the parameter count
        taken once: ``num_parameters`` walks every tensor, which the Trainer otherwise repeats every step
        (measured: 2% of a quickstart-sized step)."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if getattr(self, "_flop_parameters", None) is None:
            self._flop_parameters = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main_input].numel() * self._flop_parameters

    # -- checkpoints ------------------------------------------------------------------------------------------

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._reload_weights(resume_from_checkpoint, model if model is not None else self.model):
            super()._load_from_checkpoint(resume_from_checkpoint, model=model)

    def _load_best_model(self):
        if not self._reload_weights(self.state.best_model_checkpoint, self.model):
            super()._load_best_model()

    def _reload_weights(self, checkpoint, model) -> bool:
        """Load a checkpoint's weights the way ``from_pretrained`` does; False where the Trainer's own loading
        applies (DeepSpeed, FSDP, SageMaker, or a checkpoint that is not a saved Tag2Text model).

        The Trainer reloads with a plain, non-strict ``load_state_dict``. transformers' Swin saves its attention
        weights under their legacy names (``attention.self.query``) and maps them back only in
        ``from_pretrained``, so the plain load silently kept the vision tower's initial weights on resume.
        """
        from transformers import PreTrainedModel
        from transformers.utils import is_sagemaker_mp_enabled

        if self.is_deepspeed_enabled or self.is_fsdp_enabled or is_sagemaker_mp_enabled() or checkpoint is None:
            return False
        model = self.accelerator.unwrap_model(model)
        if not isinstance(model, PreTrainedModel):
            return False
        directory = os.fspath(checkpoint)
        if not any(os.path.isfile(os.path.join(directory, name))
                   for name in ("model.safetensors", "model.safetensors.index.json")):
            return False
        dtype = next(model.parameters()).dtype
        reloaded = type(model).from_pretrained(directory, dtype=dtype)
        # strict: every tensor of the model must come from the checkpoint (tied ones appear under both names)
        model.load_state_dict(reloaded.state_dict(), strict=True)
        del reloaded
        logger.info("loaded the weights of %s", directory)
        return True

    # -- summary ----------------------------------------------------------------------------------------------

    def run_summary(self) -> dict:
        """Facts about the run for ``train_summary.json``: processes, samples each one trained on (gathered, so
        it shows every process took part), the global ITC batch, skipped images and frozen parameters."""
        rank, world = distributed_world()
        counts = [self.samples_seen]
        if world > 1:
            import torch.distributed as dist

            counts = [None] * world
            dist.all_gather_object(counts, self.samples_seen)
        return {
            "world_size": world,
            "samples_per_process": counts,
            "itc_global_batch_size": self.last_itc_global_batch,
            "image_load_failures": self.image_load_failures,
            "frozen_parameters": len(getattr(self, "frozen_parameters", [])),
            "loss_weights": {k: getattr(self.loss_weights, k) for k in LOSS_COMPONENTS},
            "tag_loss_scale": self.loss_weights.tag_scale,
            "global_step": self.state.global_step,
        }
