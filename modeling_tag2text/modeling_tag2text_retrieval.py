"""Tag2TextForImageTextRetrieval: ITC similarities and ITM scores of images against texts (as BLIP's).

Every image is scored against every text:

* ITC: ``logits_per_image[i, j] = <f_img(i), f_txt(j)> / temperature`` with the L2-normalised projections of the
  pooled visual token and of the text encoder's ``[CLS]`` (the features ITC trains), as CLIP's logits;
  ``logits_per_text`` is the transpose. transformers' ``zero-shot-image-classification`` pipeline takes the
  softmax of ``logits_per_image`` over the candidate labels.
* ITM (``use_itm_head=True``): the interaction encoder reads each text (``[ENC]`` in place of ``[CLS]``) with
  cross-attention to each image; ``itm_logits`` (images, texts, 2) and ``itm_score`` = softmax(...)[..., 1],
  the match probability. It costs one encoder pass per image-text pair (BLIP uses it to re-rank the top ITC
  candidates).

Tag weighting (``tag_match_weight``): the paper ranks retrieval candidates by feature similarity weighted with
the number of tags recognised in the image that are also parsed from the text. It gives no formula, and the
released code has no retrieval code at all (no ITC/ITM heads, see the project README). This option is ours:
``logits_per_image[i, j] += tag_match_weight * |tags(image i) & tags(text j)|``, i.e. each shared tag multiplies
the pair's softmax weight by ``exp(tag_match_weight)``. Image tags: the tagging head's probabilities above the
per-class thresholds (tags that captioning leaves out included). Text tags: ``text_tag_labels`` (multi-hot, e.g.
from the project's spaCy tag miner, the paper's parsing) or, when not given, every tag whose token ids occur as
a contiguous run in the text (a token-level match, also ours: "dog" matches inside "hot dog"). The default
weight is ``config.retrieval_tag_match_weight`` when the config has one, else 0 (plain ITC).

Imports only torch, transformers and its own folder (single-dot imports).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .modeling_tag2text import Tag2TextModel
from .modeling_tag2text_pretraining import image_features, itm_logits, text_features


@dataclass
class Tag2TextImageTextRetrievalOutput(ModelOutput):
    """Output of :class:`Tag2TextForImageTextRetrieval`.

    Args:
        logits_per_image: (images, texts) ITC similarity / temperature, plus the tag bonus when tag weighting
            is on.
        logits_per_text: (texts, images), the transpose.
        itm_logits: (images, texts, 2) image-text matching logits (column 1: match), with ``use_itm_head``.
        itm_score: (images, texts) match probability softmax(itm_logits)[..., 1], with ``use_itm_head``.
        image_features / text_features: L2-normalised ITC projections, (images, dim) and (texts, dim).
        tag_logits: (images, num_tags), when tag weighting is on.
        tag_matches: (images, texts) number of tags of the image also found in the text, when tag weighting
            is on.
        image_embeds: (images, 1 + patches, vision width) visual tokens.
    """

    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_score: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    tag_logits: torch.FloatTensor | None = None
    tag_matches: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


class Tag2TextForImageTextRetrieval(Tag2TextModel):
    """Image-text retrieval with Tag2Text's alignment heads: ITC similarity, ITM scores and the optional tag
    weighting (see the module docstring). Loads any Tag2Text checkpoint (the decoder's weights are not used).

    Differences from BLIP's ``BlipForImageTextRetrieval``: every image is scored against every text (BLIP's
    ITM scores row-aligned pairs), ``use_itm_head`` defaults to False so that ``model(**inputs)`` gives CLIP-style
    ``logits_per_image`` (what the zero-shot pipeline reads), and the ITM output is added to, not instead of,
    the ITC logits.
    """

    # Not in any auto_map under the parent's name (Tag2TextModel is AutoModel); registration sets its own.
    _auto_class = None

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        use_itm_head: bool = False,
        tag_match_weight: float | None = None,
        text_tag_labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """Score every image against every text.

        Args:
            input_ids / attention_mask: (texts, length) tokenized texts, ``[CLS]`` first (as the tokenizer
                writes them; no decoder prompt).
            pixel_values: (images, 3, H, W), or ``image_embeds`` (images, 1 + patches, width) already computed.
            token_type_ids: accepted because BERT tokenizers return them; Tag2Text has no token types, so they
                must be all 0.
            use_itm_head: also compute the ITM scores of every pair.
            tag_match_weight: bonus per shared tag added to ``logits_per_image`` (default
                ``config.retrieval_tag_match_weight`` or 0).
            text_tag_labels: (texts, num_tags) multi-hot tags of each text; default: the token-level match.
        """
        # Nothing is dropped silently: an argument this forward has no use for must be unset (None/False).
        unexpected = sorted(k for k, v in kwargs.items() if v is not None and v is not False)
        if unexpected:
            raise TypeError(f"Tag2TextForImageTextRetrieval.forward got unexpected arguments {unexpected}")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if input_ids is None:
            raise ValueError("input_ids (the texts) are required")
        text = self.config.text_config
        if not bool((input_ids[:, 0] == text.cls_token_id).all()):
            raise ValueError(f"input_ids must start with [CLS] (id {text.cls_token_id}) as the tokenizer writes "
                             f"a text; got first ids {input_ids[:, 0].tolist()}")
        if token_type_ids is not None and bool((token_type_ids != 0).any()):
            raise ValueError("token_type_ids must be all 0: Tag2Text's text encoder has no token-type embeddings")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if image_embeds is None:
            image_embeds = self.get_image_embeddings(pixel_values)

        image_feats = image_features(self, image_embeds)
        text_feats = text_features(self, input_ids, attention_mask)
        logits_per_image = image_feats @ text_feats.t() / self.logit_temperature

        if tag_match_weight is None:
            tag_match_weight = float(getattr(self.config, "retrieval_tag_match_weight", 0.0) or 0.0)
        if tag_match_weight < 0:
            raise ValueError(f"tag_match_weight must be >= 0, got {tag_match_weight}")
        tag_logits = matches = None
        if tag_match_weight > 0:
            tag_logits = self.get_tag_logits(image_embeds)
            image_tags = torch.zeros_like(tag_logits, dtype=torch.float32)
            for row, ids in enumerate(self.select_tags(tag_logits, exclude_caption_excluded=False)):
                image_tags[row, ids] = 1.0
            if text_tag_labels is None:
                text_tag_labels = self.tags_in_text(input_ids, attention_mask)
            elif text_tag_labels.shape != (input_ids.shape[0], self.config.num_tags):
                raise ValueError(f"text_tag_labels must have shape {(input_ids.shape[0], self.config.num_tags)}, "
                                 f"got {tuple(text_tag_labels.shape)}")
            matches = image_tags @ (text_tag_labels.to(image_tags) > 0).float().t()
            logits_per_image = logits_per_image + tag_match_weight * matches.to(logits_per_image.dtype)

        itm = score = None
        if use_itm_head:
            images, texts = image_embeds.shape[0], input_ids.shape[0]
            itm_ids = input_ids.clone()
            itm_ids[:, 0] = text.enc_token_id
            itm = itm_logits(
                self,
                itm_ids.repeat(images, 1),
                attention_mask.repeat(images, 1),
                image_embeds.repeat_interleave(texts, dim=0),
            ).view(images, texts, 2)
            score = itm.float().softmax(dim=-1)[..., 1]

        output = Tag2TextImageTextRetrievalOutput(
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            itm_logits=itm,
            itm_score=score,
            image_features=image_feats,
            text_features=text_feats,
            tag_logits=tag_logits,
            tag_matches=matches,
            image_embeds=image_embeds,
        )
        return output if return_dict else output.to_tuple()

    def tags_in_text(self, input_ids: torch.LongTensor, attention_mask: torch.LongTensor | None = None):
        """(texts, num_tags) multi-hot of the tags whose token ids occur as a contiguous run among the text's
        real tokens (``config.tag_token_ids``, set by ``config.set_tag_vocabulary``)."""
        tag_token_ids = self.config.tag_token_ids
        if tag_token_ids is None:
            raise ValueError("config.tag_token_ids is not set, so tags cannot be found in texts; call "
                             "model.config.set_tag_vocabulary(tokenizer=...) or pass text_tag_labels")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        found = torch.zeros(input_ids.shape[0], len(tag_token_ids), dtype=torch.float32, device=input_ids.device)
        by_length = {}
        for index, tokens in enumerate(tag_token_ids):
            if tokens:
                by_length.setdefault(len(tokens), []).append(index)
        # Padding and masked positions never match: they become -1.
        ids = input_ids.masked_fill(attention_mask == 0, -1)
        for length, indices in by_length.items():
            if length > ids.shape[1]:
                continue
            windows = ids.unfold(1, length, 1)  # (texts, positions, length)
            tags = torch.tensor([tag_token_ids[i] for i in indices], dtype=ids.dtype, device=ids.device)
            hit = (windows[:, :, None, :] == tags[None, None]).all(dim=-1).any(dim=1)  # (texts, tags)
            found[:, indices] = hit.float()
        return found
