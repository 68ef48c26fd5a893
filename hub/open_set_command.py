"""``tag2text open-set``: give a RAM or RAM++ model a new label space (any words) and save it as a model directory.

    tag2text open-set --model ram-plus --tags my_tags.txt --descriptions my_descriptions.json \\
        --clip-model openai/clip-vit-base-patch16 --output-dir ram-plus-open-set

The new tags are embedded by the CLIP text tower (transformers' ``CLIPTextModelWithProjection`` and its tokenizer;
:func:`tag2text.build_ram_open_set`): RAM averages the original's 63 prompt texts per tag, RAM++ embeds each of a
tag's descriptions (the original's JSON ``[{tag: [descriptions]}, ...]``; a tag without an entry gets "a photo of a
{tag}." alone). Every new tag gets ``--threshold`` (0.5, the original's open-set value); ``--add`` keeps the
model's tags and appends the new ones. The directory written loads, tags, serves and annotates like a converted
one.

Bad input (a tags file that is empty or repeats a tag, a descriptions file in another format, a CLIP model whose
projection width is not the model's label width, ...) is one line naming the file and the problem, exit status 2,
and nothing is written: the directory is saved beside the target under a temporary name and renamed when
complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile

from .cli_args import UsageError, existing_file, output_directory, probability

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="RAM or RAM++ model directory or Hub repo id")
    parser.add_argument("--tags", required=True, help="text file of the new tags, one per line")
    parser.add_argument("--descriptions", default=None,
                        help="RAM++ only: JSON [{tag: [descriptions]}, ...] (the original's format); tags without "
                             "an entry are described as 'a photo of a {tag}.'")
    parser.add_argument("--tags-chinese", default=None,
                        help="text file of the new tags' Chinese names, one per line in the order of --tags "
                             "(default: the English names, where the model has Chinese names)")
    parser.add_argument("--clip-model", required=True,
                        help="CLIP directory or Hub repo id with a CLIPTextModelWithProjection and its tokenizer "
                             "(the released models: openai/clip-vit-base-patch16)")
    parser.add_argument("--output-dir", required=True, help="directory to write the new model to (new or empty)")
    parser.add_argument("--threshold", type=probability, default=None,
                        help="threshold of every new tag (default: 0.5, the original's open-set value)")
    parser.add_argument("--add", action="store_true", help="keep the model's tags and append the new ones")


def read_tag_file(path: str, option: str) -> list[str]:
    """The names of a one-per-line file (surrounding whitespace stripped, blank lines skipped), checked: not
    empty, no name twice."""
    existing_file(path, option)
    try:
        with open(path, encoding="utf-8") as handle:
            names = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{option} {path}: cannot be read as UTF-8 text ({error})") from error
    names = [name for name in names if name]
    if not names:
        raise UsageError(f"{option} {path}: the file holds no tag names")
    from ..ram_open_set import OpenSetError, check_tags  # the library's rule for a tag list, said for this file

    try:
        return check_tags(names)
    except OpenSetError as error:
        raise UsageError(f"{option} {path}: {error}") from None


def read_chinese_file(path: str, count: int) -> list[str]:
    """One Chinese name per line, kept as written (the released names end in spaces), ``count`` of them."""
    existing_file(path, "--tags-chinese")
    try:
        with open(path, encoding="utf-8") as handle:
            names = handle.read().split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--tags-chinese {path}: cannot be read as UTF-8 text ({error})") from error
    if names and names[-1] == "":
        names.pop()  # a final newline ends the last line
    if len(names) != count:
        raise UsageError(f"--tags-chinese {path}: {len(names)} names for the {count} tags of --tags")
    return names


def read_descriptions(path: str) -> list[dict]:
    """The original's description file: a JSON list of one-key objects ``{tag: [description, ...]}``."""
    existing_file(path, "--descriptions")
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UsageError(f"--descriptions {path}: not a JSON file ({error})") from error
    expected = 'the original\'s format is a JSON list [{"tag": ["description", ...]}, ...]'
    if not isinstance(value, list):
        raise UsageError(f"--descriptions {path}: holds a JSON {type(value).__name__}; {expected}")
    seen = set()
    for number, item in enumerate(value, 1):
        if not isinstance(item, dict) or len(item) != 1:
            raise UsageError(f"--descriptions {path}: entry {number} is not an object with one tag; {expected}")
        (tag, texts), = item.items()
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise UsageError(f"--descriptions {path}: entry {number} ({tag!r}) is not a list of strings; {expected}")
        if tag in seen:
            raise UsageError(f"--descriptions {path}: {tag!r} appears more than once")
        seen.add(tag)
    return value


def _check_output_dir(path: str) -> None:
    output_directory(path, "--output-dir")
    if os.path.isdir(path) and os.listdir(path):
        raise UsageError(f"--output-dir {path}: the directory is not empty; choose a new one")


def _load_clip(source: str):
    """``(CLIPTextModelWithProjection, tokenizer)`` of a directory or Hub repo id."""
    from ..processing.clip_text import ClipLoadError, load_clip_text_tower
    from .model_source import ModelSourceError

    try:
        return load_clip_text_tower(source, "--clip-model")
    except ClipLoadError as error:
        raise ModelSourceError(str(error)) from error


def _write_card(directory: str, config, family: str, args, new_tags: int) -> None:
    from .model_card import render_ram_model_card

    how = ("the 63 prompt templates of the original, averaged per tag" if family == "RAM"
           else "each description of a tag embedded on its own (the model weighs them per image)")
    threshold = 0.5 if args.threshold is None else args.threshold
    source = (f"Open-set label space made with `tag2text open-set` from `{args.model}`: {config.num_tags} tags, "
              f"{new_tags} of them new{' (added to the model' + chr(39) + 's tags)' if args.add else ''}, embedded by "
              f"the CLIP text tower `{args.clip_model}` ({how}); the new tags' threshold is {threshold:g}. The "
              "image side (vision tower, tagging head, classifier) is the source model's, unchanged.")
    with open(os.path.join(directory, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(render_ram_model_card(config, "ram" if family == "RAM" else "ram_plus", source))


def run(args) -> int:
    from .model_source import model_type, resolve_model_source, tagging_only_family

    source = resolve_model_source(args.model, "--model")
    family = tagging_only_family(model_type(source))
    if family is None:
        raise UsageError(f"--model {args.model}: open-set tags need a RAM or RAM++ model (model_type "
                         f"{model_type(source)!r})")
    tags = read_tag_file(args.tags, "--tags")
    chinese = read_chinese_file(args.tags_chinese, len(tags)) if args.tags_chinese else None
    descriptions = None
    if args.descriptions is not None:
        if family != "RAM++":
            raise UsageError(f"--descriptions {args.descriptions}: descriptions are a RAM++ input; {args.model} is "
                             "a RAM model, which embeds each tag from its name with 63 prompts")
        descriptions = read_descriptions(args.descriptions)
    _check_output_dir(args.output_dir)

    import torch

    from .. import build_ram_open_set
    from ..ram_open_set import OpenSetError, check_clip_width
    from .model_source import load_image_processor, load_model

    clip_model, clip_tokenizer = _load_clip(args.clip_model)
    image_processor = load_image_processor(source)
    model = load_model(source, pack=False, dtype=torch.float32).eval()  # saved afterwards: plain weights
    try:
        check_clip_width(clip_model, model.config.label_embed_size)
    except OpenSetError as error:
        raise UsageError(f"--clip-model {args.clip_model}: {error}") from None
    if args.add:
        repeated = [tag for tag in tags if tag in set(model.config.tag_names)]
        if repeated:
            raise UsageError(f"--tags {args.tags}: with --add, tags the model already has: "
                             + ", ".join(map(repr, repeated[:10])))
    try:
        with torch.no_grad():
            build_ram_open_set(model, tags, clip_model, clip_tokenizer, descriptions=descriptions,
                               threshold=args.threshold, tag_names_chinese=chinese, add=args.add)
    except OpenSetError as error:
        raise UsageError(f"--tags {args.tags}: {error}") from error

    target = os.path.abspath(args.output_dir)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".tmp-open-set-", dir=parent)
    try:
        model.save_pretrained(temporary)
        image_processor.save_pretrained(temporary)
        _write_card(temporary, model.config, family, args, len(tags))
        if os.path.isdir(target):
            os.rmdir(target)  # checked empty above
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    config = model.config
    print(f"open set: {config.num_tags} tags ({len(tags)} new{', added to the model' if args.add else ''}), "
          f"{model.label_embed.shape[0]} label embeddings from {args.clip_model}, saved {family} model to "
          f"{args.output_dir}")
    return 0
