"""Shared pieces of the training tests: small synthetic data, a tokenizer built from it, tiny models.

Everything is built on the fly; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# A tiny architecture for training tests: 32 px Swin, 32-wide text, small tag text.
TINY_ARCHITECTURE = {
    "vision_config": {"model_type": "swin", "image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [2, 2],
                      "num_heads": [1, 2], "window_size": 4, "drop_path_rate": 0.0, "layer_norm_eps": 1e-5},
    "text_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                    "max_position_embeddings": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "tagging_config": {"num_hidden_layers": 2, "num_attention_heads": 2},
    "image_text_hidden_size": 16,
    "max_tag_length": 20,
    "tag_threshold": 0.5,
}


def write_architecture(directory) -> str:
    path = Path(directory) / "architecture.json"
    path.write_text(json.dumps(TINY_ARCHITECTURE))
    return str(path)


def synthetic_split(directory, num_images: int, seed: int = 0) -> Path:
    from tag2text.training.synthetic import write_split

    return write_split(directory, num_images, seed=seed, image_size=32)


def add_tags_from_truth(directory) -> None:
    """Give every metadata line its drawn shapes and colours as "tags" (so tests need no spaCy mining)."""
    path = Path(directory) / "metadata.jsonl"
    lines = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        entry["tags"] = sorted({o["shape"] for o in entry["objects"]} | {o["colour"] for o in entry["objects"]})
        lines.append(json.dumps(entry))
    path.write_text("\n".join(lines) + "\n")


def caption_tokenizer(directory, texts):
    from tag2text import build_tokenizer
    from tag2text.training.model_setup import write_caption_vocabulary

    return build_tokenizer(write_caption_vocabulary(texts, Path(directory) / "vocab.txt"))


def tagged_dataset(directory, num_images: int, seed: int = 0):
    """(dataset, tag list) of a synthetic split with tags given in the metadata."""
    from tag2text.training.data import TagResolver, load_dataset

    split = synthetic_split(directory, num_images, seed)
    add_tags_from_truth(split)
    resolver = TagResolver()
    dataset = load_dataset(split, resolver)
    return dataset, resolver.tag_list


def tiny_model(tokenizer, tag_names, seed: int = 0):
    import torch

    from tag2text import Tag2TextConfig, Tag2TextForCaptioning

    values = json.loads(json.dumps(TINY_ARCHITECTURE))
    values["text_config"].update(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"), enc_token_id=tokenizer.convert_tokens_to_ids("[ENC]"))
    config = Tag2TextConfig(tag_names=list(tag_names), **values)
    config.set_tag_vocabulary(tokenizer=tokenizer)
    torch.manual_seed(seed)
    return Tag2TextForCaptioning(config)


def tiny_pretraining_model(tokenizer, tag_names, seed: int = 0):
    """The weights of :func:`tiny_model` in a Tag2TextForPreTraining (what the trainer trains)."""
    from tag2text.modeling_tag2text_pretraining import Tag2TextForPreTraining

    captioning = tiny_model(tokenizer, tag_names, seed)
    model = Tag2TextForPreTraining(captioning.config)
    model.load_state_dict(captioning.state_dict())
    return model


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO / "tests") + os.pathsep + env.get("PYTHONPATH", ""))
    return env
