"""Convert an original RAM or RAM++ checkpoint (``ram_swin_large_14m.pth``, ``ram_plus_swin_large_14m.pth``) into a
complete model directory: safetensors weights, ``config.json`` with the English and Chinese tag names and the
per-class thresholds, the image processor (square resize, ImageNet mean/std), the remote-code payload
(``AutoModelForImageClassification`` with ``trust_remote_code=True``) and a model card.

Everything is read and checked before anything is written: a bad input leaves the output directory untouched.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint_mapping import CheckpointConversionError, expected_shapes, load_converted_state_dict
from .model_card import render_ram_model_card
from .original_config import OriginalConfigError, read_tag_list
from .ram_checkpoint_mapping import FAMILY_NAMES, RAM, RAM_PLUS, convert_ram_state_dict
from .ram_original_config import ram_config_from_original, read_chinese_tag_list, read_threshold_file

logger = logging.getLogger(__name__)

# The released tag lists and thresholds live in the original code repository (pinned to the commit this port
# was checked against); RAM and RAM++ share them.
RELEASED_RAM_DATA_URL = ("https://raw.githubusercontent.com/xinyu1205/recognize-anything/"
                         "7cb804a8609e9f4b1a50b7f31436d2df40bb9481/ram/data/")
RELEASED_RAM_FILES = {"tag_list": "ram_tag_list.txt", "tag_list_chinese": "ram_tag_list_chinese.txt",
                      "threshold_file": "ram_tag_list_threshold.txt"}
RELEASED_RAM_CHECKPOINTS = {
    RAM: "https://huggingface.co/xinyu1205/recognize_anything_model/blob/main/ram_swin_large_14m.pth",
    RAM_PLUS: "https://huggingface.co/xinyu1205/recognize-anything-plus-model/blob/main/ram_plus_swin_large_14m.pth",
}


@dataclass
class RamConversionReport:
    """What :func:`convert_ram_checkpoint` wrote."""

    output_dir: Path
    checkpoint: Path
    family: str
    num_tags: int
    num_tensors: int
    descriptions_per_tag: int | None = None
    warnings: list = field(default_factory=list)


def _download_released_file(name: str, destination: Path, timeout: float = 60.0) -> Path:
    from .conversion import CheckpointDownloadError, _offline

    url = RELEASED_RAM_DATA_URL + name
    option = "--" + next(k for k, v in RELEASED_RAM_FILES.items() if v == name).replace("_", "-")
    if _offline():
        raise CheckpointDownloadError(f"HF_HUB_OFFLINE is set, so {url} was not downloaded; pass {option} FILE")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            destination.write_bytes(response.read())
    except (urllib.error.URLError, OSError) as error:
        raise CheckpointDownloadError(f"could not download {url} ({error}); pass {option} FILE") from error
    return destination


def _source_section(checkpoint: Path, family: str, sources: dict, descriptions: int | None) -> str:
    lines = "\n".join(f"- {name}: {value}" for name, value in sources.items())
    rows = f" ({descriptions} description embeddings per tag)" if descriptions else ""
    return f"""Converted from the original checkpoint `{checkpoint.name}` ({FAMILY_NAMES[family]}{rows}) with
`tag2text convert`:

{lines}

Every original tensor is mapped one to one (the Swin `qkv` projections are split into query, key and value; the
tagging head's tensors{', tied in the original to the tag encoder' + "'" + 's first two layers, are taken from the tagging-head copy' if family == RAM else ''}); the conversion fails if any tensor is left over, missing or of another shape. The
project's parity tests check the converted model against the original implementation on tiny random weights
(image embeddings, label queries, tagging-head output, logits, English and Chinese tags)."""


def convert_ram_checkpoint(output_dir, original: dict, checkpoint, family: str, tag_list=None, tag_list_chinese=None,
                           threshold_file=None, threshold: float = 0.68, vision_config=None, med_config=None,
                           q2l_config=None, tokenizer=None) -> RamConversionReport:
    """Convert a loaded original RAM / RAM++ state dict (``original``, read from ``checkpoint``) into
    ``output_dir``.

    Args:
        family: ``"ram"`` or ``"ram_plus"`` (see :func:`~.ram_checkpoint_mapping.detect_family`).
        tag_list / tag_list_chinese / threshold_file: the original's files; when no tag list is given, the three
            released files are downloaded. Without a threshold file every class gets ``threshold``.
        vision_config / med_config / q2l_config: the original's JSON files (None: the released ones).
        tokenizer: a loaded BERT tokenizer (RAM: checked against the med config; optional).

    Raises:
        CheckpointConversionError, OriginalConfigError, CheckpointDownloadError: naming the file and problem;
        nothing is written then.
    """
    from tag2text import RamForImageTagging, RamPlusForImageTagging, Tag2TextImageProcessor
    from tag2text.modeling_ram import image_processor_config_without_auto_map

    output_dir = Path(os.fspath(output_dir))
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {output_dir} exists and is not a directory")
    checkpoint = Path(os.fspath(checkpoint))
    sources = {}
    if tag_list is None:
        import tempfile

        downloads = Path(tempfile.mkdtemp(prefix="ram_lists_"))
        tag_list = _download_released_file(RELEASED_RAM_FILES["tag_list"], downloads / "ram_tag_list.txt")
        if tag_list_chinese is None:
            tag_list_chinese = _download_released_file(RELEASED_RAM_FILES["tag_list_chinese"],
                                                       downloads / "ram_tag_list_chinese.txt")
        if threshold_file is None:
            threshold_file = _download_released_file(RELEASED_RAM_FILES["threshold_file"],
                                                     downloads / "ram_tag_list_threshold.txt")
        sources["tag lists and thresholds"] = f"the released files ({RELEASED_RAM_DATA_URL})"
    names = read_tag_list(tag_list)
    rows = int(original["label_embed"].shape[0])
    descriptions = None
    if family == RAM and rows != len(names):
        raise CheckpointConversionError(
            f"the tag list {tag_list} has {len(names)} tags but checkpoint {checkpoint} has {rows} classes "
            "(label_embed rows); pass the tag list the model was built with (--tag-list)")
    if family == RAM_PLUS:
        if rows % len(names):
            raise CheckpointConversionError(
                f"the tag list {tag_list} has {len(names)} tags but checkpoint {checkpoint} has {rows} description "
                f"embeddings (label_embed rows), not a multiple of it; pass the tag list the model was built with "
                "(--tag-list)")
        descriptions = rows // len(names)
    chinese = None if tag_list_chinese is None else read_chinese_tag_list(tag_list_chinese, len(names))
    thresholds = None if threshold_file is None else read_threshold_file(threshold_file, len(names))
    for label, value in (("tag list", tag_list), ("Chinese tag list", tag_list_chinese),
                         ("thresholds", threshold_file), ("vision config", vision_config),
                         ("med config", med_config if family == RAM else None), ("q2l config", q2l_config)):
        if value is not None:
            sources.setdefault(label, f"`{Path(os.fspath(value)).name}`")
    if threshold_file is None:
        sources["thresholds"] = f"{threshold:g} for every tag (no threshold file given)"

    config = ram_config_from_original(
        family, names, chinese, thresholds, threshold=threshold, vision_config=vision_config, med_config=med_config,
        q2l_config=q2l_config, descriptions_per_tag=descriptions or 1, tokenizer=tokenizer)
    model_class = RamForImageTagging if family == RAM else RamPlusForImageTagging
    result = convert_ram_state_dict(original, expected_shapes(config, model_class), family)
    model = model_class(config)
    load_converted_state_dict(model, result)
    model.eval()
    logger.info("converted %d tensors of a %s checkpoint", len(result.state_dict), FAMILY_NAMES[family])

    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    Tag2TextImageProcessor(size=config.vision_config.image_size).save_pretrained(output_dir)
    image_processor_config_without_auto_map(output_dir)  # config.json names it (see there why)
    if tokenizer is not None:  # RAM never tokenizes to tag; kept for a caption path on the text decoder
        tokenizer.save_pretrained(output_dir)
    card = render_ram_model_card(config, family, _source_section(checkpoint, family, sources, descriptions))
    (output_dir / "README.md").write_text(card, encoding="utf-8")
    return RamConversionReport(output_dir=output_dir, checkpoint=checkpoint, family=family, num_tags=config.num_tags,
                               num_tensors=len(result.state_dict), descriptions_per_tag=descriptions,
                               warnings=list(result.warnings))


__all__ = ["RamConversionReport", "convert_ram_checkpoint", "render_ram_model_card", "OriginalConfigError"]
