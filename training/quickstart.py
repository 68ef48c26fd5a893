"""The quickstart (``tag2text quickstart``): see every part of training work, offline, on the CPU, in a few minutes.

It draws a synthetic dataset (shapes with colours, sizes and positions; :mod:`.synthetic`), mines tags from its
captions, builds a whole-word vocabulary, trains a small Tag2Text with all four losses (tagging, LM, ITC, ITM),
evaluates it on held-out images and writes a report to ``--output-dir``:

* ``metrics.json``: tagging (mAP, P/R/F1), captioning (BLEU, ROUGE-L, CIDEr; METEOR with ``--meteor``),
  whether captions name the right objects and colours, retrieval R@1/5/10 (ITC, then ITM re-ranking), times;
* ``plots/loss*.png``: each loss component over the steps (training and held-out);
* ``contact_sheet.png``: held-out images with their predicted tags and captions (green frame: the caption
  names the drawn objects and colours);
* ``model/``: the trained model and processor (``from_pretrained``, the image-to-text pipeline).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# The sizes of the "small" preset, which the quickstart trains (benchmarks/training.py builds the same model
# from this dict; a test checks that the two agree).
QUICKSTART_ARCHITECTURE = {
    "vision_config": {"model_type": "swin", "image_size": 64, "patch_size": 4, "embed_dim": 32, "depths": [2, 2, 2],
                      "num_heads": [2, 4, 8], "window_size": 4, "drop_path_rate": 0.0, "layer_norm_eps": 1e-5,
                      "use_absolute_embeddings": True},
    "text_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                    "max_position_embeddings": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "tagging_config": {"num_hidden_layers": 2, "num_attention_heads": 2},
    "image_text_hidden_size": 64,
    "max_tag_length": 24,
    "tag_threshold": 0.5,
}


@dataclasses.dataclass
class QuickstartOptions:
    """What ``tag2text quickstart`` takes (its options have these names and defaults)."""

    output_dir: str = "tag2text-quickstart"
    train_images: int = 3000
    val_images: int = 200
    test_images: int = 100
    max_steps: int = 2000
    # tagging twice the others: with equal weights the shared vision tower learned the objects' shapes far more
    # slowly (measured)
    loss_weights: str = "tag=2,lm=1,itc=0.5,itm=0.5"
    batch_size: int = 32
    learning_rate: float = 1e-3  # 2e-3 stalled the shape features (measured)
    time_budget_minutes: float | None = None
    seed: int = 0
    meteor: bool = False
    num_beams: int = 3


def _time_budget_callback(seconds: float):
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Stop when the training time budget is spent, so the quickstart keeps its promise on slow machines."""

        def __init__(self):
            self.start = None
            self.stopped_at = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() - self.start > seconds and not control.should_training_stop:
                control.should_training_stop = True
                self.stopped_at = state.global_step
                logger.warning("--time-budget-minutes %g reached at step %d of %d; stopping training early",
                               seconds / 60, state.global_step, state.max_steps)
            return control

    return TimeBudget()


def _caption_accuracy(predictions, truth) -> dict:
    from .synthetic import caption_names_objects

    named = bound = 0
    for prediction in predictions:
        objects = truth[Path(prediction["image"]).name]
        check = caption_names_objects(prediction["caption"] or "", objects)
        prediction["caption_check"] = check
        named += check["objects_and_colours"]
        bound += check["bound"]
    n = max(len(predictions), 1)
    return {"caption_names_objects_and_colours": named / n, "caption_binds_colours_to_objects": bound / n}


def _first_caption_retrieval(result) -> dict:
    """Text-to-image R@1/5 with each image's complete (first) caption as the query, among all test images."""
    import numpy as np

    scores = result.scores
    owner = np.asarray(scores["text_to_image"])
    first = np.array([np.flatnonzero(owner == i)[0] for i in range(scores["sim_t2i"].shape[1])])
    sim = np.asarray(scores["sim_t2i"])[first]
    ranks = (sim >= sim[np.arange(len(first)), np.arange(len(first))][:, None]).sum(axis=1) - 1
    return {"t2i_r1_complete_caption": float(np.mean(ranks < 1)), "t2i_r5_complete_caption": float(np.mean(ranks < 5)),
            "retrieval_candidates": int(sim.shape[1])}


def run_quickstart(args: QuickstartOptions) -> dict:
    """Draw the data, train, evaluate and write the report into ``args.output_dir``; returns the report."""
    import torch

    from .arguments import DataArguments, ModelArguments, Tag2TextTrainingArguments
    from .evaluation import Tag2TextEvaluator
    from .report import contact_sheet, plot_losses
    from .synthetic import generate_dataset, read_ground_truth, write_split
    from .training_run import calibrate_thresholds, prepare_training, run_training

    started = time.monotonic()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    logger.info("drawing %d training, %d validation and %d test images", args.train_images, args.val_images,
                args.test_images)
    data = generate_dataset(output / "data", num_train=args.train_images, num_test=args.test_images, seed=args.seed)
    val_dir = write_split(output / "data" / "val", args.val_images, seed=args.seed + 7)
    model_dir = output / "model"
    model_args = ModelArguments(model_config="small", tokenizer="from-captions", scratch_init=True)
    data_args = DataArguments(train_dir=str(data["train"]), eval_dir=str(val_dir), augment=False, shuffle_tags=True,
                              eval_tasks="")
    eval_every = max(args.max_steps // 6, 1)
    training_args = Tag2TextTrainingArguments(
        output_dir=str(model_dir),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.learning_rate,
        weight_decay=0.05,
        warmup_steps=max(args.max_steps // 20, 1),
        lr_scheduler_type="cosine",
        logging_steps=max(args.max_steps // 60, 1),
        eval_strategy="steps",
        eval_steps=eval_every,
        save_strategy="no",
        use_cpu=True,
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
        # Summed ASL over the batch size: the released rescaling to the LM loss learned tags more slowly here
        # (tag mAP 73 against 84 after 2,400 steps, measured).
        tag_loss_scale="batch",
        loss_weights=args.loss_weights,
    )
    budget = _time_budget_callback(args.time_budget_minutes * 60) if args.time_budget_minutes else None
    prepared = time.monotonic()
    setup = prepare_training(model_args, data_args, training_args, callbacks=[budget] if budget else [])
    summary = run_training(setup)
    # Thresholds from the validation split (never the test split), saved with the model.
    thresholds = calibrate_thresholds(setup)
    setup.trainer.save_model(str(model_dir))
    trained = time.monotonic()

    evaluator = Tag2TextEvaluator(setup.processor, batch_size=50, meteor=True if args.meteor else False,
                                  generate_kwargs={"num_beams": args.num_beams}, itm_rerank_k=16, return_scores=True)
    from .data import TagResolver, load_dataset

    test = load_dataset(data["test"], TagResolver(setup.tag_list))
    result = evaluator.evaluate(setup.model, test)
    truth = read_ground_truth(data["test"])
    metrics = dict(result.scalars())
    metrics.update(_caption_accuracy(result.predictions, truth))
    metrics.update(_first_caption_retrieval(result))
    finished = time.monotonic()

    plots = plot_losses(setup.trainer.state.log_history, output / "plots")
    entries = []
    for prediction in result.predictions[:16]:
        objects = truth[Path(prediction["image"]).name]
        drawn = ", ".join(f"{o['size']} {o['colour']} {o['shape']} ({o['position']})" for o in objects)
        entries.append({
            "image": prediction["image"],
            "lines": [f"tags: {', '.join(prediction['tags'])}", f"caption: {prediction['caption']}", f"drawn: {drawn}"],
            "ok": prediction["caption_check"]["objects_and_colours"],
        })
    sheet = contact_sheet(entries, output / "contact_sheet.png")
    report = {
        "metrics": metrics,
        "targets": {
            "tag_F1_at_least_0.9": (metrics.get("tag_OF1") or 0) >= 90 and (metrics.get("tag_CF1") or 0) >= 90,
            "captions_name_objects_and_colours_at_least_0.7": metrics["caption_names_objects_and_colours"] >= 0.7,
            "t2i_R@1_at_least_0.5_among_100": metrics["t2i_r1_complete_caption"] >= 0.5,
        },
        "steps": setup.trainer.state.global_step,
        "planned_steps": args.max_steps,
        "stopped_early": setup.trainer.state.global_step < args.max_steps,
        "stop_reason": (f"--time-budget-minutes {args.time_budget_minutes:g}" if budget and budget.stopped_at
                        else "stopped before the planned steps" if setup.trainer.state.global_step < args.max_steps
                        else None),
        "seconds": {"data_and_setup": round(prepared - started, 1), "training": round(trained - prepared, 1),
                    "evaluation": round(finished - trained, 1), "total": round(finished - started, 1)},
        "tag_list": list(setup.tag_list.names),
        "tag_thresholds": {setup.tag_list.names[i]: round(t, 3) for i, t in thresholds.items()},
        "train_summary": {k: summary[k] for k in ("world_size", "itc_global_batch_size", "loss_weights",
                                                  "tag_loss_scale", "global_step")},
        "plots": [str(p) for p in plots],
        "contact_sheet": str(sheet),
        "model": str(model_dir),
        "examples": [{k: p[k] for k in ("image", "tags", "caption", "references")} for p in result.predictions[:8]],
    }
    (output / "metrics.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def format_report(report: dict) -> str:
    """The report's summary, as ``tag2text quickstart`` prints it."""
    m = report["metrics"]
    pct = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    lines = []
    if report["stopped_early"]:
        lines.append(f"STOPPED EARLY: trained {report['steps']} of {report['planned_steps']} planned steps "
                     f"({report['stop_reason']}); the metrics below are of that shorter run")
    lines += [
        f"Tag2Text quickstart: {report['steps']} of {report['planned_steps']} steps, "
        f"{report['seconds']['total'] / 60:.1f} min (training {report['seconds']['training'] / 60:.1f} min)",
        f"  tagging     mAP {pct(m.get('tag_mAP'))}  F1 overall {pct(m.get('tag_OF1'))}  per-class {pct(m.get('tag_CF1'))}",
        f"  captions    name the right objects and colours: {100 * m['caption_names_objects_and_colours']:.0f}%  "
        f"(colours bound to the right shapes: {100 * m['caption_binds_colours_to_objects']:.0f}%)  "
        f"BLEU-4 {m.get('caption_Bleu_4', 0):.3f}  CIDEr {m.get('caption_CIDEr', 0):.3f}",
        f"  retrieval   text->image R@1 {100 * m['t2i_r1_complete_caption']:.0f}% among {m['retrieval_candidates']} "
        f"(complete captions); all captions: t2i R@1 {pct(m.get('retrieval_img_r1'))}, "
        f"i2t R@1 {pct(m.get('retrieval_txt_r1'))}",
        "  targets     " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in report["targets"].items()),
        f"  report      {Path(report['contact_sheet']).parent}/metrics.json, plots/, contact_sheet.png; "
        f"model in {report['model']}",
    ]
    return "\n".join(lines)

