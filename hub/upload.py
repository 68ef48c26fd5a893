"""Upload a Tag2Text model directory to the Hugging Face Hub.

The directory is checked first, so that what lands on the Hub loads with ``trust_remote_code``: config with
``auto_map``, weights, the remote-code payload and the processor files. A directory without a README gets a
generated model card. The token comes from the argument, ``HF_TOKEN`` or ``hf auth login``; it is passed to
huggingface_hub only, never logged or written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

PAYLOAD_FILES = (
    "configuration_tag2text.py", "modeling_tag2text.py", "modeling_tag2text_text.py", "generation_original.py",
    "tag_output.py",
)
PIPELINE_FILE = "pipeline_tag2text.py"
PROCESSOR_FILES = ("processor_config.json",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
# Training leftovers and pickles that do not belong in a model repo.
IGNORE_PATTERNS = [
    "*.pth", "*.pt", "*.bin", "*.ckpt", "checkpoint-*", "checkpoint-*/**", ".git/**", ".cache/**",
    "__pycache__/**", "*.pyc", "runs/**", "optimizer*", "scheduler*", "rng_state*",
]


class ModelDirectoryError(ValueError):
    """The directory would not load from the Hub; the message lists what is missing."""


def check_model_directory(model_dir) -> dict:
    """Check that ``model_dir`` is a complete Tag2Text directory; returns its config.json as a dict."""
    model_dir = Path(os.fspath(model_dir))
    if not model_dir.is_dir():
        raise ModelDirectoryError(f"--model-dir {model_dir} is not a directory")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelDirectoryError(f"--model-dir {model_dir} has no config.json; save the model with save_pretrained")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelDirectoryError(f"{config_path} is not valid JSON ({error})") from error
    if config.get("model_type") != "tag2text":
        raise ModelDirectoryError(f"{config_path} has model_type={config.get('model_type')!r}, not 'tag2text'")
    problems = []
    if not any((model_dir / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        problems.append("weights (model.safetensors or model.safetensors.index.json)")
    missing_code = [name for name in PAYLOAD_FILES if not (model_dir / name).is_file()]
    if missing_code or "auto_map" not in config:
        problems.append(
            f"remote code ({', '.join(missing_code) or 'auto_map in config.json'}); save with the classes "
            "taken from the tag2text package (or after tag2text.register_auto_classes()), which registers them "
            "for the Auto API"
        )
    if "image-to-text" in config.get("custom_pipelines", {}) and not (model_dir / PIPELINE_FILE).is_file():
        problems.append(PIPELINE_FILE)
    if not (model_dir / PROCESSOR_FILES[0]).is_file():
        problems.append("processor files (processor_config.json); save the processor into the directory too")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"tokenizer files ({', '.join(TOKENIZER_FILES)})")
    if problems:
        raise ModelDirectoryError(f"--model-dir {model_dir} is incomplete, missing: " + "; ".join(problems))
    return config


def push_model_directory(
    model_dir,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    write_model_card: bool = True,
    endpoint: str | None = None,
) -> str:
    """Create ``repo_id`` if needed (and the ``revision`` branch) and upload ``model_dir`` in one commit.

    ``endpoint`` overrides the Hub address (default: ``HF_ENDPOINT`` or huggingface.co).

    Returns:
        the URL of the commit.
    Raises:
        ModelDirectoryError: the directory is incomplete (nothing is uploaded).
        RuntimeError: the Hub refused or could not be reached (the message names the repo and the step).
    """
    from huggingface_hub import HfApi

    model_dir = Path(os.fspath(model_dir))
    check_model_directory(model_dir)
    if not repo_id or repo_id.count("/") > 1 or repo_id.strip() != repo_id:
        raise ValueError(f"--repo-id must be NAME or OWNER/NAME, got {repo_id!r}")
    readme = model_dir / "README.md"
    if write_model_card and not readme.is_file():
        from .model_card import card_for_directory

        readme.write_text(card_for_directory(model_dir, repo_id=repo_id), encoding="utf-8")
        logger.info("wrote a model card to %s", readme)

    api = HfApi(token=token, endpoint=endpoint)
    step = "create the repository"
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        full_id = getattr(repo_url, "repo_id", None) or repo_id
        if revision:
            step = f"create the branch {revision!r}"
            api.create_branch(full_id, branch=revision, exist_ok=True, repo_type="model")
        step = "upload the files"
        commit = api.upload_folder(
            repo_id=full_id,
            folder_path=str(model_dir),
            repo_type="model",
            revision=revision,
            commit_message=commit_message or "Upload Tag2Text model",
            ignore_patterns=IGNORE_PATTERNS,
        )
    except Exception as error:  # hub, network and auth errors alike: say which step failed for which repo
        raise RuntimeError(f"pushing {model_dir} to the Hub repo {repo_id!r} failed to {step}: "
                           f"{type(error).__name__}: {error}") from error
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("uploaded %s to %s (%s)", model_dir, full_id, url)
    return url
