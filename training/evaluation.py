"""Task evaluation of a Tag2Text model: tagging, captioning and image-text retrieval.

* Tagging: tag probabilities against the records' tags (mAP; precision/recall/F1 at the model's thresholds).
* Captioning: generated captions (the model's own predicted tags, the model's generation defaults unless
  overridden) against all reference captions (BLEU-1..4, METEOR where Java exists, ROUGE-L, CIDEr).
* Retrieval as BLIP evaluates it: every image against every caption by ITC similarity, then the top ``k``
  candidates of each query re-ranked by ITM (score = ITM "match" logit + ITC cosine similarity, as BLIP's
  ``evaluation``; the rest keep a score far below). R@1/5/10 both ways; ``retrieval_itc_*`` holds the ITC-only
  ranking.

Used by ``tag2text evaluate``, by the Trainer's evaluation (:class:`~.trainer.Tag2TextTrainer`) and by the
quickstart.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from . import scoring
from .images import ImageLoader

logger = logging.getLogger(__name__)

TASKS = ("tagging", "captioning", "retrieval")
_BELOW_RERANKED = -100.0  # BLIP's score for candidates outside the re-ranked top k


@dataclasses.dataclass
class EvaluationResult:
    """``metrics`` (name -> value) and ``predictions`` (per evaluated image: ``index``, ``image``, ``tags``,
    ``caption``, ``references``)."""

    metrics: dict
    predictions: list
    scores: dict | None = None  # with return_scores: sim_i2t, sim_t2i (numpy), text_to_image

    def scalars(self) -> dict:
        return {k: v for k, v in self.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _batches(iterable, size):
    iterator = iter(iterable)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


class Tag2TextEvaluator:
    """Evaluate a model on records (see :mod:`.data`): a ``datasets.Dataset``, a list or a stream.

    Args:
        processor: the model's processor (inference preprocessing; no augmentation).
        batch_size: images per forward pass.
        max_samples: evaluate at most this many images (the first ones).
        tasks: any of ``"tagging"``, ``"captioning"``, ``"retrieval"``.
        generate_kwargs: overrides of the model's generation settings (e.g. ``num_beams=1``).
        itm_rerank_k: candidates per query re-ranked by ITM (0: ITC ranking only).
        meteor: None = METEOR where Java exists; False = skip it (it takes ~15 s to start).
        image_loader: counts and skips unreadable images.
        return_scores: keep the retrieval score matrices in the result (``EvaluationResult.scores``).
    """

    def __init__(self, processor, batch_size: int = 32, max_samples: int | None = None, tasks=TASKS,
                 generate_kwargs: dict | None = None, itm_rerank_k: int = 16, meteor: bool | None = None,
                 image_loader: ImageLoader | None = None, progress: bool = True, return_scores: bool = False):
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown evaluation task(s) {unknown}; choose from {TASKS}")
        self.processor = processor
        self.batch_size = int(batch_size)
        self.max_samples = max_samples
        self.tasks = tuple(tasks)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.itm_rerank_k = int(itm_rerank_k)
        self.meteor = meteor
        self.image_loader = image_loader or ImageLoader()
        self.progress = progress
        self.return_scores = return_scores
        self._scores = None

    @torch.no_grad()
    def evaluate(self, model, records) -> EvaluationResult:
        model.eval()
        device = model.device
        config = model.config
        total = len(records) if hasattr(records, "__len__") else None
        if self.max_samples:
            total = min(total, self.max_samples) if total is not None else self.max_samples
            records = itertools.islice(records, self.max_samples)
        failures_before = self.image_loader.skipped
        probs, labels, predictions, image_features, image_embeds = [], [], [], [], []
        for chunk in tqdm(_batches(records, self.batch_size), desc="evaluating", unit="batch",
                          total=math.ceil(total / self.batch_size) if total else None, disable=not self.progress):
            kept, images = [], []
            for record in chunk:
                image = self.image_loader.load(record["image"], name=repr(record["image"])
                                               if isinstance(record["image"], str) else None)
                if image is not None:
                    kept.append(record)
                    images.append(image)
            if not images:
                continue
            pixel_values = self.processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            captions = [None] * len(kept)
            if "captioning" in self.tasks:
                # One pass over the image side: tags, their probabilities and the captions from one call.
                generated = model.generate(pixel_values, return_dict_in_generate=True, **self.generate_kwargs)
                embeds, logits = generated["image_embeds"], generated["tag_logits"]
                captions = self.processor.decode_captions(generated.sequences)
            else:
                embeds = model.get_image_embeddings(pixel_values)
                logits = model.get_tag_logits(embeds)
            probs.append(torch.sigmoid(logits.float()).cpu())
            rows = torch.zeros(len(kept), config.num_tags)
            for row, record in enumerate(kept):
                if record.get("tag_ids"):
                    rows[row, list(record["tag_ids"])] = 1.0
            labels.append(rows)
            tags = [[config.tag_names[i] for i in ids] for ids in model.select_tags(logits)]
            if "retrieval" in self.tasks:
                features = model.get_image_features(image_embeds=embeds).pooler_output
                image_features.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
                image_embeds.append(embeds.cpu())
            for record, image_tags, caption in zip(kept, tags, captions):
                predictions.append({
                    "index": int(record.get("index", len(predictions))),
                    "image": record["image"] if isinstance(record["image"], str) else record["image"].get("path"),
                    "tags": image_tags,
                    "caption": caption,
                    "references": list(record["captions"]),
                    "tag_ids": list(record.get("tag_ids") or []),
                })
        failed = self.image_loader.skipped - failures_before
        if not predictions:
            raise ValueError("no evaluation image could be loaded")
        metrics = {"num_images": len(predictions), "image_load_failures": failed}
        if "tagging" in self.tasks:
            metrics.update(scoring.tagging_scores(torch.cat(probs).numpy(), torch.cat(labels).numpy(),
                                                  np.asarray(config.threshold_list())))
        if "captioning" in self.tasks:
            references = {i: p["references"] for i, p in enumerate(predictions)}
            generated = {i: p["caption"] for i, p in enumerate(predictions)}
            metrics.update(scoring.caption_scores(references, generated, meteor=self.meteor))
        if "retrieval" in self.tasks:
            metrics.update(self._retrieval(model, predictions, torch.cat(image_features), torch.cat(image_embeds)))
        return EvaluationResult(metrics, predictions, self._scores if self.return_scores else None)

    @torch.no_grad()
    def tag_probabilities(self, model, records):
        """(probabilities, multi-hot labels) of the records' images, as numpy arrays."""
        model.eval()
        probs, labels = [], []
        records = itertools.islice(records, self.max_samples) if self.max_samples else records
        for chunk in _batches(records, self.batch_size):
            kept = [(r, self.image_loader.load(r["image"])) for r in chunk]
            kept = [(r, image) for r, image in kept if image is not None]
            if not kept:
                continue
            pixel_values = self.processor(images=[image for _, image in kept], return_tensors="pt")["pixel_values"].to(
                model.device)
            probs.append(torch.sigmoid(model.get_tag_logits(model.get_image_embeddings(pixel_values)).float()).cpu())
            rows = torch.zeros(len(kept), model.config.num_tags)
            for row, (record, _) in enumerate(kept):
                if record.get("tag_ids"):
                    rows[row, list(record["tag_ids"])] = 1.0
            labels.append(rows)
        return torch.cat(probs).numpy(), torch.cat(labels).numpy()

    def calibrate_thresholds(self, model, records, keep_others: bool = False) -> dict:
        """Set per-class thresholds that maximise F1 on ``records`` (a validation split, not the test split) in
        the model's config; classes without a positive keep the global threshold, or with ``keep_others`` the
        threshold they had. The asymmetric loss leaves probabilities uncalibrated (negatives are barely
        penalised), so a fixed 0.5 over-tags; the released model's thresholds were tuned likewise. Returns
        ``{class index: threshold}``."""
        from .metrics import search_thresholds

        probs, labels = self.tag_probabilities(model, records)
        config = model.config
        found = search_thresholds(probs, labels, default_threshold=config.tag_threshold)
        thresholds = {int(i): float(np.clip(found["thresholds"][i], 0.0, 1.0))
                      for i in np.flatnonzero(found["searched"])}
        if hasattr(config, "class_thresholds"):  # RAM / RAM++: one list of every class's threshold
            values = config.threshold_list() if keep_others else [config.tag_threshold] * config.num_tags
            for index, value in thresholds.items():
                values[index] = value
            config.class_thresholds = values
        else:  # Tag2Text: a {class index: threshold} map over the global one
            config.tag_thresholds = {**config.tag_thresholds, **thresholds} if keep_others else thresholds
        config._validate()
        logger.info("calibrated %d per-class tag thresholds on %d images (validation F1 %.3f)", len(thresholds),
                    len(probs), float(np.nanmean(found["f1"])))
        return thresholds

    def text_inputs(self, texts: list[str]):
        """(ITC ids with [CLS] first, ITM ids with [ENC] first, mask) of captions without the prompt."""
        encoded = self.processor.encode_alignment_text(texts)
        return encoded["text_input_ids"], encoded["itm_input_ids"], encoded["text_attention_mask"]

    def _retrieval(self, model, predictions, image_features, image_embeds) -> dict:
        device = model.device
        texts, owner = [], []
        for image_index, prediction in enumerate(predictions):
            for caption in prediction["references"]:
                texts.append(caption)
                owner.append(image_index)
        itc_ids, itm_ids, mask = self.text_inputs(texts)
        text_features = []
        for start in range(0, len(texts), self.batch_size):
            stop = start + self.batch_size
            features = model.get_text_features(itc_ids[start:stop].to(device), mask[start:stop].to(device)).pooler_output
            text_features.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        text_features = torch.cat(text_features)
        sim = image_features @ text_features.t()  # (images, texts)
        sim_i2t, sim_t2i = sim.clone(), sim.t().clone()
        k = self.itm_rerank_k
        if k > 0:
            sim_i2t = self._rerank(model, sim, itm_ids, mask, image_embeds, k, image_queries=True)
            sim_t2i = self._rerank(model, sim.t(), itm_ids, mask, image_embeds, k, image_queries=False)
        self._scores = {"sim_i2t": sim_i2t.numpy(), "sim_t2i": sim_t2i.numpy(), "text_to_image": list(owner)}
        scores = scoring.retrieval_scores(sim_i2t.numpy(), np.asarray(owner), sim_t2i.numpy())
        itc_only = scoring.retrieval_scores(sim.numpy(), np.asarray(owner))
        scores.update({f"retrieval_itc_{k[len('retrieval_'):]}": v for k, v in itc_only.items()
                       if k.endswith(("r1", "r5", "r10"))})
        return scores

    def _rerank(self, model, sim, itm_ids, mask, image_embeds, k, image_queries: bool):
        """Scores with each query's top-k candidates replaced by ITM match logit + ITC similarity (BLIP)."""
        device = model.device
        k = min(k, sim.shape[1])
        top_sim, top_index = sim.topk(k, dim=1)
        queries = torch.arange(sim.shape[0]).repeat_interleave(k)
        candidates = top_index.reshape(-1)
        images, texts = (queries, candidates) if image_queries else (candidates, queries)
        match = []
        pairs_per_call = max(self.batch_size, 1) * 4
        for start in range(0, len(images), pairs_per_call):
            stop = start + pairs_per_call
            logits = model.get_itm_logits(itm_ids[texts[start:stop]].to(device), mask[texts[start:stop]].to(device),
                                          image_embeds[images[start:stop]].to(device))
            match.append(logits.float()[:, 1].cpu())
        scores = torch.full_like(sim, _BELOW_RERANKED)
        scores.scatter_(1, top_index, torch.cat(match).view(-1, k) + top_sim)
        return scores
