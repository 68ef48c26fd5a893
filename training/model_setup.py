"""Building the tokenizer, processor and model a training run starts from.

A new model gets its architecture from a preset or a config.json and its tag list from the data; a model
given by ``--init-from`` keeps its weights, and when the run's tag list differs, the tagging head is rebuilt
for the new list with the rows of tags present in both lists carried over (so a fine-tune on custom tags
keeps what the model knew about the shared ones).
"""

from __future__ import annotations

import logging
import os
import re
import string
from collections import Counter
from pathlib import Path

import torch

from .. import (
    PRESETS,
    Tag2TextConfig,
    Tag2TextImageProcessor,
    Tag2TextProcessor,
    build_tokenizer,
    preset_config,
)
from ..modeling_tag2text_pretraining import Tag2TextForPreTraining
from .tag_mining import TagList

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FROM_CAPTIONS = "from-captions"
# Enough for the captions of tens of thousands of images at a small model's cost (the decoder's output layer
# is vocabulary x hidden); words seen once are spelled in pieces rather than given their own row.
WORDPIECE_VOCAB_SIZE = 8192
WORDPIECE_MIN_FREQUENCY = 2
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def write_caption_vocabulary(texts, path: str | os.PathLike, min_count: int = 1) -> Path:
    """A whole-word BERT vocabulary (``vocab.txt``) covering ``texts``: special tokens, then every lower-cased
    word and punctuation mark seen at least ``min_count`` times. Every word outside it becomes [UNK]; the
    default from-captions tokenizer is :func:`train_caption_wordpiece`, which falls back to word pieces."""
    counts = Counter(token for text in texts for token in _WORD.findall(str(text).lower()))
    words = sorted(w for w, n in counts.items() if n >= min_count)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(SPECIAL_TOKENS + ["|"] + [w for w in words if w != "|"]) + "\n", encoding="utf-8")
    return path


def train_caption_wordpiece(texts, path: str | os.PathLike, required=(), vocab_size: int = WORDPIECE_VOCAB_SIZE,
                            min_frequency: int = WORDPIECE_MIN_FREQUENCY) -> Path:
    """Train a lower-casing BERT WordPiece vocabulary on ``texts`` with the ``tokenizers`` library and write it
    as ``vocab.txt`` (special tokens first, the ids BERT uses).

    Words seen at least ``min_frequency`` times become whole tokens as long as ``vocab_size`` allows; rarer
    and unseen words are spelled in pieces (every character seen is in the vocabulary), so captions and tag
    names outside the training captions still tokenize without [UNK]. ``required`` texts (the decoder
    prompt, tag names, the tag separator) are counted often enough to become whole tokens.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=int(vocab_size), min_frequency=int(min_frequency),
                                        special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##",
                                        show_progress=False)
    corpus = [str(t) for t in texts] + [str(t) for t in required] * max(int(min_frequency), 1)
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    tokens = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    # WordPiece turns a whole word into [UNK] when one of its characters has no piece; the trainer makes a
    # "##c" continuation piece only for characters it saw inside words. Every character seen, and every ASCII
    # letter and digit, gets both forms, so an unseen word is always spelled in pieces.
    present = set(tokens)
    characters = {t for t in tokens if len(t) == 1} | set(string.ascii_lowercase + string.digits)
    tokens += sorted({c for c in characters if c not in present} | {f"##{c}" for c in characters} - present)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def load_tokenizer(source: str | None, init_from: str | None, vocabulary_texts=None, work_dir=None, required=()):
    """The tokenizer of a run: ``source`` (a vocab.txt, tokenizer directory or Hub id), or one trained on the
    training captions (``source`` is ``from-captions``, or None for a new model), or None with ``init_from``
    (the initial model's processor brings its own). ``required``: texts the trained vocabulary must hold."""
    if source is None and init_from is not None:
        return None  # the processor of the initial model brings its tokenizer
    if source in (None, FROM_CAPTIONS):
        if vocabulary_texts is None:
            raise ValueError("a tokenizer trained on the captions needs map-style training data with captions")
        path = train_caption_wordpiece(vocabulary_texts, Path(work_dir or ".") / "vocab.txt", required=required)
        count = len(path.read_text(encoding="utf-8").splitlines())
        logger.info("%s: trained a %d-token WordPiece vocabulary on %d training captions (%s)",
                    "no --tokenizer given" if source is None else "--tokenizer from-captions", count,
                    len(vocabulary_texts), path)
        return build_tokenizer(path)
    return build_tokenizer(source)


def make_processor(tokenizer, config: Tag2TextConfig) -> Tag2TextProcessor:
    size = int(config.vision_config.image_size)
    return Tag2TextProcessor(image_processor=Tag2TextImageProcessor(size=size), tokenizer=tokenizer,
                             prompt=config.prompt, max_tag_length=config.max_tag_length,
                             tag_separator=config.tag_separator)


def new_config(name_or_path: str, tag_list: TagList, tokenizer, image_size: int | None = None) -> Tag2TextConfig:
    """A config from a preset name or a config.json, sized to ``tokenizer`` and carrying ``tag_list``."""
    if name_or_path in PRESETS:
        overrides = {"tag_names": list(tag_list.names)}
        if image_size:
            base = preset_config(name_or_path)
            vision = base.vision_config.to_dict()
            vision["image_size"] = int(image_size)
            overrides["vision_config"] = vision
        return preset_config(name_or_path, tokenizer=tokenizer, **overrides)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--model-config {name_or_path!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a config file"
        )
    values = Tag2TextConfig.from_json_file(str(path)).to_dict()
    for key in ("tag_names", "num_tags", "tag_thresholds", "caption_excluded_tag_ids", "tag_token_ids",
                "tag_separator_token_ids", "prompt_token_ids", "auto_map", "architectures", "transformers_version"):
        values.pop(key, None)
    values["tag_names"] = list(tag_list.names)
    if image_size:
        values["vision_config"]["image_size"] = int(image_size)
    # The tokenizer's special-token ids, before the config is built (it checks them against the vocabulary).
    values["text_config"].update(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"), enc_token_id=tokenizer.convert_tokens_to_ids("[ENC]"),
    )
    config = Tag2TextConfig(**values)
    config.set_tag_vocabulary(tokenizer=tokenizer)
    return config


def name_embedding(model, tokenizer, name: str) -> torch.Tensor:
    """Mean of the model's own text word embeddings (the interaction encoder's, which reads the tag text) over
    the word pieces of ``name``: the start of a new tag's label query."""
    ids = tokenizer(name, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"tag {name!r} has no word pieces in the tokenizer")
    if all(i == tokenizer.unk_token_id for i in ids):
        logger.warning("tag %r is [UNK] to the tokenizer: its label query starts from the [UNK] embedding", name)
    table = model.text_encoder.embeddings.word_embeddings.weight
    return table[torch.tensor(ids, device=table.device)].mean(dim=0)


@torch.no_grad()
def replace_tag_vocabulary(model, tag_names: list[str], tokenizer) -> dict:
    """Rebuild the tagging head for ``tag_names``.

    A tag whose name is in both lists keeps its label query, classifier row and bias (copied exactly), its
    per-class threshold and whether captions exclude it. A new tag's label query starts from the mean of the
    model's text word embeddings of its name (a random or zero query is known to fail for this head); its
    classifier row and bias get the head's standard initialisation. Returns ``{"kept": [...], "new": [...]}``.
    """
    old = {}
    for index, name in enumerate(model.config.tag_names):
        old.setdefault(name, index)
    head = model.tagging_head
    hidden = head.label_embed.weight.shape[1]
    new_queries = torch.empty(len(tag_names), hidden).to(head.label_embed.weight)
    new_weight = torch.empty(len(tag_names), hidden).to(head.classifier_weight)
    new_bias = torch.empty(len(tag_names)).to(head.classifier_bias)
    bound = 1.0 / hidden ** 0.5  # the head's own initialisation (see Tag2TextPreTrainedModel._init_weights)
    torch.nn.init.uniform_(new_weight, -bound, bound)
    torch.nn.init.uniform_(new_bias, -bound, bound)
    config = model.config
    old_thresholds = config.tag_thresholds
    old_excluded = set(config.caption_excluded_tag_ids)
    thresholds, excluded, kept, added = {}, [], [], []
    for index, name in enumerate(tag_names):
        if name in old:
            source = old[name]
            new_queries[index] = head.label_embed.weight[source]
            new_weight[index] = head.classifier_weight[source]
            new_bias[index] = head.classifier_bias[source]
            if source in old_thresholds:
                thresholds[index] = old_thresholds[source]
            if source in old_excluded:
                excluded.append(index)
            kept.append(name)
        else:
            new_queries[index] = name_embedding(model, tokenizer, name).to(new_queries)
            added.append(name)
    head.label_embed.weight = torch.nn.Parameter(new_queries)
    head.label_embed.num_embeddings = len(tag_names)
    head.classifier_weight = torch.nn.Parameter(new_weight)
    head.classifier_bias = torch.nn.Parameter(new_bias)
    config.tag_names = [str(n) for n in tag_names]
    config.tag_thresholds = thresholds
    config.caption_excluded_tag_ids = sorted(excluded)
    config.set_tag_vocabulary(tokenizer=tokenizer)
    config._validate()
    dropped = len(set(old) - set(tag_names))
    logger.info("new tag list of %d tags: %d kept from the initial model (weights and thresholds), %d new "
                "(label queries from the word embeddings of their names), %d of the model's tags dropped",
                len(tag_names), len(kept), len(added), dropped)
    return {"kept": kept, "new": added}


def _sincos_2d(side: int, width: int) -> torch.Tensor:
    """(side*side, width) 2-D sine-cosine position code (x in the first half of the channels, y in the second)."""
    quarter = width // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    parts = []
    for coordinate in (xs.flatten(), ys.flatten()):
        angle = coordinate[:, None].float() * freqs[None, :]
        parts += [torch.sin(angle), torch.cos(angle)]
    code = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(code, (0, width - code.shape[1]))


@torch.no_grad()
def scratch_init(model) -> list[str]:
    """Initialisation for training a small model from scratch in few steps (the quickstart; ``--scratch-init``).

    * Tag queries N(0, 0.02) instead of the released N(0, 1): with unit-variance queries the residual path of
      the tagging head carries the query itself and drowns the image signal (tag logits then barely depend on
      the image for hundreds of steps); small queries let the cross-attended image features through at once.
    * Absolute position embeddings of a ViT, or of a Swin with ``use_absolute_embeddings``, start as a 2-D
      sine-cosine code instead of zeros, so tags such as "left" or "top" are learnable from the first step.

    Returns what was changed.
    """
    changed = []
    torch.nn.init.normal_(model.tagging_head.label_embed.weight, mean=0.0, std=0.02)
    changed.append("tagging_head.label_embed")
    embeddings = getattr(model.vision_model, "embeddings", None)
    positions = getattr(embeddings, "position_embeddings", None)
    if isinstance(positions, torch.nn.Parameter):
        count, width = positions.shape[1], positions.shape[2]
        has_cls = int(count ** 0.5) ** 2 != count  # ViT: a class token before the patches
        side = int((count - has_cls) ** 0.5)
        if side * side == count - has_cls:
            positions[0, has_cls:] = _sincos_2d(side, width).to(positions)
            changed.append("vision_model.embeddings.position_embeddings")
    logger.info("scratch initialisation of %s", ", ".join(changed))
    return changed


def build_model_and_processor(model_args, tag_list: TagList | None, tokenizer=None):
    """(model, processor) for a run. ``tag_list`` None keeps the ``--init-from`` model's tags.

    The model is a :class:`~tag2text.modeling_tag2text_pretraining.Tag2TextForPreTraining`: the captioning
    model's weights with the four training losses in its forward; it saves as a ``Tag2TextForCaptioning``."""
    if model_args.init_from:
        model = Tag2TextForPreTraining.from_pretrained(model_args.init_from)
        if tokenizer is None:
            processor = Tag2TextProcessor.from_pretrained(model_args.init_from)
            tokenizer = processor.tokenizer
        else:
            if len(tokenizer) != model.config.text_config.vocab_size:
                model.resize_token_embeddings(len(tokenizer))
            processor = make_processor(tokenizer, model.config)
        if tag_list is not None and list(tag_list.names) != list(model.config.tag_names):
            replace_tag_vocabulary(model, list(tag_list.names), tokenizer)
        model.config.set_tag_vocabulary(tokenizer=tokenizer)
    else:
        if tag_list is None:
            raise ValueError("a new model needs a tag list")
        if tokenizer is None:
            raise ValueError("a new model needs a tokenizer")
        config = new_config(model_args.model_config, tag_list, tokenizer, model_args.image_size)
        model = Tag2TextForPreTraining(config)
        if getattr(model_args, "scratch_init", False):
            scratch_init(model)
        processor = make_processor(tokenizer, config)
    if model_args.tag_threshold is not None:
        model.config.tag_threshold = float(model_args.tag_threshold)
        model.config._validate()
    return model, processor
