"""Zero-shot image classification with :class:`~.modeling_tag2text_retrieval.Tag2TextForImageTextRetrieval`.

transformers' own ``zero-shot-image-classification`` pipeline already runs the retrieval model (it tokenizes
``hypothesis_template.format(label)`` with the tokenizer, calls ``model(**text, pixel_values=...)`` and takes the
softmax of ``logits_per_image``); it only logs that the class is not in its list of supported models. This
subclass drops that message for Tag2Text and adds the model's two options as call arguments:

* ``tag_match_weight``: the tag bonus of the retrieval model (labels that name a recognised tag gain);
* ``use_itm_head``: rank the labels by the ITM head instead (softmax over the labels of the match log-odds
  ``itm_logits[..., 1] - itm_logits[..., 0]``), one encoder pass per label.

    pipe = Tag2TextZeroShotImageClassificationPipeline(model=retrieval_model, tokenizer=processor.tokenizer,
                                                       image_processor=processor.image_processor)
    pipe(image, candidate_labels=["dog", "cat"], tag_match_weight=1.0)
"""

from __future__ import annotations

from collections import UserDict

from transformers.pipelines.zero_shot_image_classification import ZeroShotImageClassificationPipeline

from .modeling_tag2text_retrieval import Tag2TextForImageTextRetrieval


class Tag2TextZeroShotImageClassificationPipeline(ZeroShotImageClassificationPipeline):
    """``zero-shot-image-classification`` for :class:`Tag2TextForImageTextRetrieval` (see the module docstring)."""

    def check_model_type(self, supported_models):
        if not isinstance(self.model, Tag2TextForImageTextRetrieval):
            super().check_model_type(supported_models)

    def _sanitize_parameters(self, tag_match_weight=None, use_itm_head=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if tag_match_weight is not None:
            forward["tag_match_weight"] = float(tag_match_weight)
        if use_itm_head is not None:
            forward["use_itm_head"] = bool(use_itm_head)
        return preprocess, forward, postprocess

    def _forward(self, model_inputs, tag_match_weight=None, use_itm_head=False):
        candidate_labels = model_inputs.pop("candidate_labels")
        text_inputs = model_inputs.pop("text_inputs")
        # As the parent: one BatchEncoding per call, or nested one level deeper when batched.
        text_inputs = text_inputs[0] if isinstance(text_inputs[0], UserDict) else text_inputs[0][0]
        outputs = self.model(**text_inputs, **model_inputs, tag_match_weight=tag_match_weight,
                             use_itm_head=use_itm_head)
        if use_itm_head:
            logits = outputs.itm_logits[..., 1] - outputs.itm_logits[..., 0]
        else:
            logits = outputs.logits_per_image
        return {"candidate_labels": candidate_labels, "logits": logits}
