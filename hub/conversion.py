"""Convert an original Tag2Text checkpoint (``tag2text_swin_14m.pth``) into a complete model directory.

The directory holds the safetensors weights, ``config.json`` with the tag names, thresholds and token ids,
the processor files (tokenizer with ``[DEC]``/``[ENC]``, image processor), ``generation_config.json`` with
the released decoding defaults, the remote-code payload with the image-to-text pipeline, and a model card.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint_mapping import (
    CheckpointConversionError,
    convert_state_dict,
    expected_shapes,
    load_converted_state_dict,
    unwrap_state_dict,
)
from ..configuration_tag2text import generation_defaults
from .original_config import (
    RELEASED_NUM_TAGS,
    RELEASED_THRESHOLD,
    OriginalConfigError,
    check_released_tag_names,
    config_from_original,
    read_tag_list,
)

logger = logging.getLogger(__name__)

# Where the original README links the released checkpoint: a Space repo, not a model repo.
RELEASED_CHECKPOINT_REPO = "xinyu1205/Recognize_Anything-Tag2Text"
RELEASED_CHECKPOINT_REPO_TYPE = "space"
RELEASED_CHECKPOINT_FILENAME = "tag2text_swin_14m.pth"
RELEASED_CHECKPOINT_URL = (
    f"https://huggingface.co/spaces/{RELEASED_CHECKPOINT_REPO}/blob/main/{RELEASED_CHECKPOINT_FILENAME}"
)
# The released 3,429-tag list lives only in the original code repository (pinned to the commit this port
# was checked against).
RELEASED_TAG_LIST_URL = (
    "https://raw.githubusercontent.com/xinyu1205/recognize-anything/"
    "7cb804a8609e9f4b1a50b7f31436d2df40bb9481/ram/data/tag2text_ori_tag_list.txt"
)


class CheckpointDownloadError(RuntimeError):
    """A file could not be fetched; the message says what, from where, and how to do without it."""


@dataclass
class ConversionReport:
    """What :func:`convert_checkpoint` wrote."""

    output_dir: Path
    checkpoint: Path
    checkpoint_sha256: str
    num_tags: int
    num_tensors: int
    new_keys: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    pushed_to: str | None = None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_released_checkpoint(cache_dir=None, token=None) -> Path:
    """Fetch ``tag2text_swin_14m.pth`` from the Hub Space that the original README links.

    Raises:
        CheckpointDownloadError: offline, unreachable or missing, with the URL and the ``--checkpoint`` hint.
    """
    from huggingface_hub import hf_hub_download

    logger.info("downloading %s (about 1.5 GB or more) from the Space %s", RELEASED_CHECKPOINT_FILENAME,
                RELEASED_CHECKPOINT_REPO)
    try:
        path = hf_hub_download(
            repo_id=RELEASED_CHECKPOINT_REPO,
            filename=RELEASED_CHECKPOINT_FILENAME,
            repo_type=RELEASED_CHECKPOINT_REPO_TYPE,
            cache_dir=cache_dir,
            token=token,
        )
    except Exception as error:  # any failure (offline mode, DNS, HTTP, disk) gets the same actionable message
        raise CheckpointDownloadError(
            f"could not download the released checkpoint {RELEASED_CHECKPOINT_URL} "
            f"({type(error).__name__}: {error}). Download it yourself when online and pass --checkpoint PATH "
            "(checkpoint=... in Python)."
        ) from error
    return Path(path)


def download_released_tag_list(timeout: float = 60.0) -> list[str]:
    """The released 3,429-tag list, fetched from the original repository and checked."""
    if _offline():
        raise CheckpointDownloadError(
            f"HF_HUB_OFFLINE is set, so the released tag list ({RELEASED_TAG_LIST_URL}) was not downloaded; "
            "pass --tag-list FILE (the original ram/data/tag2text_ori_tag_list.txt)"
        )
    logger.info("downloading the released tag list from %s", RELEASED_TAG_LIST_URL)
    try:
        with urllib.request.urlopen(RELEASED_TAG_LIST_URL, timeout=timeout) as response:
            names = response.read().decode("utf-8").splitlines()
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as error:
        raise CheckpointDownloadError(
            f"could not download the released tag list {RELEASED_TAG_LIST_URL} ({error}); pass --tag-list FILE "
            "(the original ram/data/tag2text_ori_tag_list.txt)"
        ) from error
    if len(names) != RELEASED_NUM_TAGS or not check_released_tag_names(names, RELEASED_TAG_LIST_URL):
        raise CheckpointDownloadError(
            f"the tag list downloaded from {RELEASED_TAG_LIST_URL} is not the released one ({len(names)} lines); "
            "pass --tag-list FILE"
        )
    return names


def load_original_checkpoint(path) -> dict:
    """Tensors of an original checkpoint file, loaded with ``torch.load(weights_only=True)`` (no code from the
    file runs) or from safetensors; ``{'model': state_dict, ...}`` and bare state dicts are accepted."""
    import pickle

    import torch

    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return unwrap_state_dict(load_file(str(path)), str(path))
    try:
        try:
            # mmap keeps the 1.5 GB of weights (and any optimizer state) out of memory until used.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as error:
        raise CheckpointConversionError(
            f"checkpoint {path} pickles objects other than tensors and plain containers, which "
            f"torch.load(weights_only=True) refuses to run ({str(error).splitlines()[0]}). If you trust the file, "
            "extract its weights once: torch.save(torch.load(PATH, weights_only=False)['model'], 'weights.pth'), "
            "and convert weights.pth."
        ) from error
    # A file that is not a PyTorch checkpoint at all reaches the weights-only unpickler as noise, which fails with
    # whatever lookup its bytes break first (KeyError, IndexError, ...): every such failure is the same fault.
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise CheckpointConversionError(
            f"checkpoint {path} is not a readable PyTorch file ({type(error).__name__}: {error})") from error
    return unwrap_state_dict(checkpoint, str(path))


def checkpoint_num_tags(original: dict) -> int | None:
    """Number of tag classes in an original state dict (rows of ``label_embed.weight``)."""
    if "label_embed.weight" in original:
        return int(original["label_embed.weight"].shape[0])
    if "fc.b" in original:
        return int(original["fc.b"].shape[-1])
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_tokenizer(name_or_path):
    from tag2text import build_tokenizer

    try:
        return build_tokenizer(name_or_path)
    except (OSError, ValueError) as error:
        raise OriginalConfigError(
            f"tokenizer {str(name_or_path)!r} could not be loaded ({error}). Offline, pass --tokenizer DIR with "
            "the bert-base-uncased vocab.txt (or a vocab.txt file)."
        ) from error


def _source_section(checkpoint: Path, sha256: str, downloaded: bool, tag_list_source: str, configs: dict) -> str:
    origin = f"[{RELEASED_CHECKPOINT_FILENAME}]({RELEASED_CHECKPOINT_URL})" if downloaded else f"`{checkpoint.name}`"
    config_lines = "\n".join(f"  - {name}: {value}" for name, value in configs.items())
    return f"""Converted from the original checkpoint {origin} (sha256 `{sha256}`) with `tag2text convert`:

- tag list: {tag_list_source}
- original configuration:
{config_lines}

The conversion maps every original tensor one to one (the Swin `qkv` projections are split into query, key and
value; the tagging head's tensors, tied in the original to the interaction encoder's first two layers, are
taken from the tagging-head copy) and fails if any tensor is left over, missing or of another shape. The
project's parity tests check that the converted model reproduces the original implementation (its visual
features, tag logits, tags, interaction-encoder states, decoder logits and captions) on tiny random weights."""


def convert_checkpoint(
    output_dir,
    checkpoint=None,
    tag_list=None,
    vision_config=None,
    med_config=None,
    q2l_config=None,
    threshold: float = RELEASED_THRESHOLD,
    class_thresholds: dict | None = None,
    delete_tag_index: list[int] | None = None,
    tokenizer="bert-base-uncased",
    push_to_hub: str | None = None,
    private: bool = False,
    cache_dir=None,
    token=None,
) -> ConversionReport:
    """Convert an original Tag2Text checkpoint into a model directory that transformers loads.

    Args:
        output_dir: directory to write (created; existing files of the same names are replaced).
        checkpoint: the original ``.pth`` (or a ``.safetensors`` with original key names); ``None``
            downloads ``tag2text_swin_14m.pth`` from the Space the original README names.
        tag_list: the tag list file the model was built with; ``None`` downloads the released list.
        vision_config / med_config / q2l_config: the original's JSON config files (or dicts); ``None`` means
            the released ``config_swinB_384.json``, ``med_config.json`` and ``q2l_config.json``.
        threshold / class_thresholds / delete_tag_index: tagging settings; ``None`` for the last two means the
            released values (0.7 for person/man/woman; seven tags left out of captions), ``{}``/``[]`` none.
        tokenizer: ``bert-base-uncased`` from the Hub, a directory with its ``vocab.txt``, or the file.
        push_to_hub: a repo id to upload the directory to afterwards.
        private: create the pushed repo as private.
        cache_dir / token: for the downloads and the upload (the token is never logged or written).

    Raises:
        CheckpointConversionError, OriginalConfigError, CheckpointDownloadError: with the offending keys,
            files or arguments named.
    """
    # Taking the classes from the package registers them, so that save_pretrained writes the remote-code payload.
    from tag2text import Tag2TextForCaptioning, Tag2TextImageProcessor, Tag2TextProcessor

    output_dir = Path(os.fspath(output_dir))
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {output_dir} exists and is not a directory")

    if tag_list is not None:
        tag_names = read_tag_list(tag_list)
        tag_list_source = f"`{Path(os.fspath(tag_list)).name}` ({len(tag_names)} tags)"
        check_released_tag_names(tag_names, str(tag_list))
    else:
        tag_names = download_released_tag_list()
        tag_list_source = f"the released list ({RELEASED_TAG_LIST_URL})"

    # Config and tokenizer first: they fail fast, before a long download or load.
    text_tokenizer = _load_tokenizer(tokenizer)
    config = config_from_original(
        tag_names, vision_config=vision_config, med_config=med_config, q2l_config=q2l_config,
        threshold=threshold, class_thresholds=class_thresholds, delete_tag_index=delete_tag_index,
        tokenizer=text_tokenizer,
    )

    downloaded = checkpoint is None
    checkpoint_path = download_released_checkpoint(cache_dir, token) if downloaded else Path(os.fspath(checkpoint))
    original = load_original_checkpoint(checkpoint_path)
    found = checkpoint_num_tags(original)
    if found is not None and found != len(tag_names):
        raise CheckpointConversionError(
            f"the tag list has {len(tag_names)} tags but checkpoint {checkpoint_path} has {found} classes "
            "(label_embed.weight rows); pass the tag list the model was built with (--tag-list)"
        )

    result = convert_state_dict(original, expected_shapes(config))
    model = Tag2TextForCaptioning(config)
    load_converted_state_dict(model, result)
    model.eval()
    del original
    logger.info("converted %d tensors; new, initialised fresh: %s", len(result.state_dict),
                ", ".join(result.new_keys) or "none")

    # The released decoding defaults (one definition, applied by the model's constructor).
    for name, value in generation_defaults(config).items():
        setattr(model.generation_config, name, value)

    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor = Tag2TextProcessor(
        image_processor=Tag2TextImageProcessor(size=config.vision_config.image_size),
        tokenizer=text_tokenizer,
        prompt=config.prompt,
        max_tag_length=config.max_tag_length,
        tag_separator=config.tag_separator,
    )
    processor.save_pretrained(output_dir)

    sha256 = _sha256(checkpoint_path)
    configs = {
        name: (f"`{Path(os.fspath(value)).name}`" if isinstance(value, (str, os.PathLike)) else
               ("released default" if value is None else "given as a dict"))
        for name, value in (("vision", vision_config), ("med", med_config), ("q2l", q2l_config))
    }
    from .model_card import render_model_card

    card = render_model_card(
        config,
        repo_id=push_to_hub,
        source=_source_section(checkpoint_path, sha256, downloaded, tag_list_source, configs),
        new_parameters=result.new_keys,
    )
    (output_dir / "README.md").write_text(card, encoding="utf-8")
    report = ConversionReport(
        output_dir=output_dir,
        checkpoint=checkpoint_path,
        checkpoint_sha256=sha256,
        num_tags=config.num_tags,
        num_tensors=len(result.state_dict),
        new_keys=list(result.new_keys),
        warnings=list(result.warnings),
    )
    logger.info("wrote %s", output_dir)
    if push_to_hub:
        from .upload import push_model_directory

        report.pushed_to = push_model_directory(output_dir, push_to_hub, private=private, token=token,
                                                commit_message=f"Convert {checkpoint_path.name} with tag2text convert")
    return report


__all__ = [
    "CheckpointDownloadError",
    "ConversionReport",
    "RELEASED_CHECKPOINT_URL",
    "RELEASED_TAG_LIST_URL",
    "checkpoint_num_tags",
    "convert_checkpoint",
    "download_released_checkpoint",
    "download_released_tag_list",
    "load_original_checkpoint",
]
