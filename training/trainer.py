"""Tag2TextTrainer: a transformers Trainer whose loss is the weighted sum of tagging, captioning (LM), ITC and ITM.

* The model is a :class:`~tag2text.modeling_tag2text_pretraining.Tag2TextForPreTraining`: its forward computes
  the four losses (ITC gathered across processes with gradients, ITM hard negatives drawn inside) and their
  weighted sum with :class:`~.losses.LossWeights`; ``compute_loss`` returns that sum. Everything runs inside the
  (possibly DDP-wrapped) forward, so DDP's own defaults apply: no parameter is frozen by name and
  ``ddp_find_unused_parameters``/gradient checkpointing keep the Trainer's defaults.
* Each component is logged (``loss_tag``, ``loss_lm``, ``loss_itc``, ``loss_itm``; ``eval_loss_*`` in
  evaluation) averaged over the steps since the last log and over the processes.
* A NaN or infinite component stops training: a checkpoint of the last finite weights is saved, then
  :class:`NonFiniteLossError` names the step and the component(s).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections import defaultdict

import torch
from transformers import Trainer, TrainerCallback

from ..modeling_tag2text_pretraining import Tag2TextForPreTraining
from .losses import LOSS_COMPONENTS, LossWeights, distributed_world

logger = logging.getLogger(__name__)


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


class Tag2TextTrainer(Trainer):
    """Trainer for Tag2Text pre-training and fine-tuning.

    Args (besides the Trainer's):
        loss_weights: :class:`~.losses.LossWeights`; default: ``args.loss_weights``/``args.tag_loss_scale`` of
            :class:`~.arguments.Tag2TextTrainingArguments`, else all 1 with the released tag-loss rescaling.
        task_evaluator: an :class:`~.evaluation.Tag2TextEvaluator`; evaluation then also reports tagging,
            captioning and retrieval metrics on the evaluation data (computed on the main process).
        eval_data_collator: collator of evaluation batches (default: the training one).

    The model must be a :class:`~tag2text.modeling_tag2text_pretraining.Tag2TextForPreTraining` (the weights of
    a captioning model; it saves as one). The collator provides its forward's inputs (for ITC/ITM
    ``text_input_ids``/``text_attention_mask`` with ``[CLS]`` first and ``sample_ids``, see
    :class:`~.collator.Tag2TextCollator`); the images that collator skipped (its ``image_load_failures``, summed
    over processes) are logged as ``image_load_failures``.
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
        from ..modeling_ram import RamForImageTagging

        # RAM / RAM++ (RamPlusForImageTagging is a RamForImageTagging) train their tagging loss alone.
        self.tagging_only = isinstance(model, RamForImageTagging)
        if model is not None and not isinstance(model, Tag2TextForPreTraining) and not self.tagging_only:
            raise TypeError(
                f"Tag2TextTrainer trains a Tag2TextForPreTraining (all four losses in its forward) or a RAM / RAM++ "
                f"tagging model, got {type(model).__name__}; build it with Tag2TextForPreTraining(config) or "
                "Tag2TextForPreTraining.from_pretrained(path): the weights are the captioning model's"
            )
        if args is not None:
            # Dataset columns are images/captions/tags, not forward arguments: the collator builds the inputs.
            args.remove_unused_columns = False
            if args.label_names is None:
                args.label_names = ["labels"]
        super().__init__(model, args, *pos, **kwargs)
        # The loss ignores num_items_in_batch; make the Trainer neither inject it nor rescale for it.
        self.model_accepts_loss_kwargs = False
        self._components = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._extras = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.image_load_failures = 0
        self._skipped_in_evaluation = 0
        self.last_loss_components = {}
        self.samples_seen = 0
        self.last_itc_global_batch = None

    # -- loss -------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        split = "train" if model.training else "eval"
        # A plain mapping crosses DDP's input handling as it is; the model validates it again.
        if self.tagging_only:
            outputs = model(**inputs, return_dict=True)
        else:
            outputs = model(**inputs, loss_weights=dataclasses.asdict(self.loss_weights), return_dict=True)
        if outputs.loss is None:
            raise ValueError(
                f"the batch gives no loss with weights {self.loss_weights}: it lacks the inputs of every active "
                f"objective (got {sorted(inputs)})"
            )
        loss = outputs.loss
        batch_size = outputs.image_embeds.shape[0]
        if self.tagging_only:
            components = {"tag": loss}
        else:
            components = {name: outputs[f"loss_{name}"] for name in LOSS_COMPONENTS
                          if outputs.get(f"loss_{name}") is not None}
        if outputs.get("logits_per_image") is not None:
            global_batch = int(outputs.logits_per_image.shape[1])
            self.last_itc_global_batch = global_batch
            self._extras[split]["itc_global_batch"].append(torch.tensor(float(global_batch)))
        for name, value in components.items():
            self._components[split][name].append(value.detach().float())
        # Raw (unweighted) values of this batch, for callers and tests.
        self.last_loss_components = {name: float(value.detach()) for name, value in components.items()}
        if split == "train":
            self.samples_seen += batch_size
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
        if split == "train":
            skipped = self._skipped_images()
            if skipped is not None:
                result["image_load_failures"] = skipped
        extras.clear()
        return result

    def _skipped_images(self) -> int | None:
        """Training images the collator skipped so far, summed over processes (a collective, like
        :meth:`_reduced_means`); None when the collator does not count them."""
        local = getattr(self.data_collator, "image_load_failures", None)
        if local is None:
            return None
        count = torch.tensor(int(local) - self._skipped_in_evaluation, device=self.accelerator.device)
        self.image_load_failures = int(self.accelerator.reduce(count, reduction="sum").item())
        return self.image_load_failures

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
        # Evaluation with the training collator: its skipped images are not training images.
        collator = self.data_collator if self.eval_data_collator is None else None
        skipped_before = getattr(collator, "image_load_failures", None)
        # Only the losses are gathered: logits of a captioning model over a whole eval set are large and unused.
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=True, ignore_keys=ignore_keys,
                                         metric_key_prefix=metric_key_prefix)
        if skipped_before is not None:
            self._skipped_in_evaluation += collator.image_load_failures - skipped_before
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
        it shows every process took part), the global ITC batch and skipped images (a collective: every process
        calls it)."""
        rank, world = distributed_world()
        self._skipped_images()  # the count up to now, not up to the last log
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
            "loss_weights": ({"tag": 1.0} if self.tagging_only
                             else {k: getattr(self.loss_weights, k) for k in LOSS_COMPONENTS}),
            "tag_loss_scale": None if self.tagging_only else self.loss_weights.tag_scale,
            "global_step": self.state.global_step,
        }
