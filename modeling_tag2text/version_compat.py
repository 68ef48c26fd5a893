"""Which transformers and torch releases Tag2Text runs on, and the named checks for the places where they differ.

Supported: transformers 5.0 up to (not including) 6, torch 2.13 and newer. Importing this module with anything
else raises :class:`UnsupportedVersionError`, one line naming the installed and the supported versions. Every
payload module that transformers' dynamic-module loader can load on its own (configuration, modeling,
processing, image processing, pipeline) imports this module first, so a saved model directory loaded with
``trust_remote_code=True`` under transformers 4 stops there with that line instead of deep inside transformers.

Every code path that differs between the supported releases asks one of the checks below; nothing else in the
package tests versions or catches ImportError for that purpose. Each check looks at the installed library's
behaviour (a signature, the parameter names of a module) rather than at a release number, so a release that
back-ports a change is handled too.

Part of the Hub payload: imports only the standard library, torch and transformers.
"""

from __future__ import annotations

import functools
import inspect
import re

import torch
import transformers

SUPPORTED_TRANSFORMERS = ">=5.0,<6"
SUPPORTED_TORCH = ">=2.13"
MINIMUM_TRANSFORMERS = (5, 0)
FIRST_UNSUPPORTED_TRANSFORMERS = (6,)
MINIMUM_TORCH = (2, 13)


class UnsupportedVersionError(ImportError):
    """transformers or torch is outside the supported range; the message is one line naming both."""


def release(version: str) -> tuple[int, ...]:
    """The release numbers of a version string: ``"5.0.0"`` -> (5, 0, 0), ``"2.13.0+cpu"`` -> (2, 13, 0),
    ``"5.1.0.dev0"`` -> (5, 1, 0), ``"5.0.0rc1"`` -> (5, 0, 0)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(version))
    if match is None:
        raise ValueError(f"not a version number: {version!r}")
    return tuple(int(part) for part in match.group(1).split("."))


INSTALLED_TRANSFORMERS = transformers.__version__
TRANSFORMERS_VERSION = release(transformers.__version__)
TORCH_VERSION = release(torch.__version__)


def unsupported_versions_message(transformers_version: str, torch_version: str) -> str | None:
    """None when both versions are supported, else the one-line explanation (installed and supported)."""
    problems = []
    installed_transformers = release(transformers_version)
    if not MINIMUM_TRANSFORMERS <= installed_transformers < FIRST_UNSUPPORTED_TRANSFORMERS:
        problems.append(f"transformers{SUPPORTED_TRANSFORMERS}")
    if release(torch_version) < MINIMUM_TORCH:
        problems.append(f"torch{SUPPORTED_TORCH}")
    if not problems:
        return None
    return (
        f"Tag2Text needs transformers{SUPPORTED_TRANSFORMERS} and torch{SUPPORTED_TORCH}; installed: transformers "
        f"{transformers_version}, torch {torch_version} (pip install " + " ".join(f"'{p}'" for p in problems) + ")"
    )


def check_versions(transformers_version: str | None = None, torch_version: str | None = None) -> None:
    """Raise :class:`UnsupportedVersionError` (one line) unless the given, by default the installed, versions
    are supported."""
    message = unsupported_versions_message(
        transformers.__version__ if transformers_version is None else transformers_version,
        torch.__version__ if torch_version is None else torch_version,
    )
    if message is not None:
        raise UnsupportedVersionError(message)


# Checked when the payload is imported: before any transformers API that older releases lack is touched.
check_versions()


# -- generation ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def generation_cache_argument() -> str:
    """The keyword under which the installed ``GenerationMixin.generate`` passes the cache around: ``"cache"``
    (5.24 and later) or ``"past_key_values"`` (5.0; the releases between were not tried); the model's own forward
    takes ``cache`` on every release. Read from the signature of ``GenerationMixin.prepare_inputs_for_generation`` (on first use: the
    generation module is not imported with the configuration)."""
    parameters = inspect.signature(transformers.GenerationMixin.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def model_inputs_for_forward(model_inputs: dict) -> dict:
    """transformers' per-step model inputs as Tag2Text's forward takes them: the cache under ``cache`` whatever
    the release calls it, and the per-step extras some releases add dropped when empty (cache positions follow
    from the cache itself; a given ``inputs_embeds`` stays, so that forward names it as unsupported)."""
    inputs = dict(model_inputs)
    name = generation_cache_argument()
    if name != "cache" and name in inputs:
        inputs["cache"] = inputs.pop(name)
    # transformers 5.0 adds these for every step: cache_position, and inputs_embeds=None after the first step.
    inputs.pop("cache_position", None)
    if "inputs_embeds" in inputs and inputs["inputs_embeds"] is None:
        del inputs["inputs_embeds"]
    return inputs


@functools.lru_cache(maxsize=None)
def assisted_generation_supported() -> bool:
    """Whether Tag2Text's captions can use assisted generation (``assistant_model``) on the installed release.
    transformers 5.0's ``AssistedCandidateGenerator`` refuses any minimum length (a ``MinLengthLogitsProcessor``,
    which the released defaults create) and, without one, a given cache together with the assistant's cache
    implementation (measured); later releases run it. Read from the generator's code, where the refusal shows."""
    from transformers.generation.candidate_generator import AssistedCandidateGenerator

    return "Passing `MinLengthLogitsProcessor`" not in inspect.getsource(AssistedCandidateGenerator.__init__)


def enable_activation_checkpointing(model, **checkpoint_kwargs) -> None:
    """transformers' activation (gradient) checkpointing on ``model``, ``checkpoint_kwargs`` going to
    ``torch.utils.checkpoint`` (``use_reentrant``). Newer releases call it ``activation_checkpointing_enable`` and
    keep ``gradient_checkpointing_enable`` as a deprecated alias; transformers 5.0 has only the latter."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs or None)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs or None)


def disable_activation_checkpointing(model) -> None:
    """The reverse of :func:`enable_activation_checkpointing` under the installed release's name."""
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


# -- attention ------------------------------------------------------------------------------------------------


def tower_attention_implementation(tower_class, requested: str | None) -> str | None:
    """The attention implementation to build a transformers vision tower with: the requested one, or ``"eager"``
    where SDPA was asked for and the installed release's ``tower_class`` has no SDPA path (``SwinModel`` in
    transformers 5.0, which raises then instead of falling back as it does for the default)."""
    if requested is not None and "sdpa" in requested and not getattr(tower_class, "_supports_sdpa", False):
        return "eager"
    return requested


def registered_attention_function(implementation: str, default):
    """The attention function transformers registers under ``implementation`` ("sdpa", "flash_attention_2",
    ...), else ``default``. Newer releases look it up with ``get_interface`` (which also validates the name and
    resolves aliases); transformers 5.0's registry is a plain mapping."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # here: the configuration does not need it

    if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, default)
    return ALL_ATTENTION_FUNCTIONS.get(implementation, default)


# -- Swin parameter names ------------------------------------------------------------------------------------

# Per Swin block: the role of each parameter -> its name below ``encoder.layers.<stage>.blocks.<block>.``.
_SWIN_SPLIT_QKV_NAMES = {
    "query": "attention.q_proj",
    "key": "attention.k_proj",
    "value": "attention.v_proj",
    "attention_output": "attention.o_proj",
    "relative_position_bias_table": "attention.relative_position_bias.relative_position_bias_table",
    "mlp_in": "mlp.fc1",
    "mlp_out": "mlp.fc2",
}
_SWIN_SELF_ATTENTION_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "relative_position_bias_table": "attention.self.relative_position_bias_table",
    "mlp_in": "intermediate.dense",
    "mlp_out": "output.dense",
}


@functools.lru_cache(maxsize=None)
def swin_has_split_qkv() -> bool:
    """Whether the installed ``SwinModel`` names its block parameters ``attention.q_proj``/``o_proj``/``mlp.fc1``
    (newer 5.x releases) rather than ``attention.self.query``/``attention.output.dense``/``intermediate.dense``
    (transformers 5.0). Saved files use the latter on every release (newer releases rename on load and save);
    only code that addresses the modules in memory (the checkpoint converter) needs to know."""
    config = transformers.SwinConfig(image_size=8, patch_size=4, embed_dim=4, depths=[1], num_heads=[1],
                                     window_size=2)
    with torch.device("meta"):  # names only: no memory, no initialisation cost
        names = {name for name, _ in transformers.SwinModel(config, add_pooling_layer=False).named_parameters()}
    return any(".attention.q_proj." in name for name in names)


@functools.lru_cache(maxsize=None)
def swin_absolute_positions_have_extra_row() -> bool:
    """Whether the installed ``SwinEmbeddings`` gives ``use_absolute_embeddings`` one position row more than
    there are patches (transformers 5.0 allots a class position Swin has no token for, and its forward then
    fails to add them: 257 rows against 256 patches); later releases allot one row per patch."""
    config = transformers.SwinConfig(image_size=8, patch_size=4, embed_dim=4, depths=[1], num_heads=[1],
                                     window_size=2, use_absolute_embeddings=True)
    with torch.device("meta"):
        rows = transformers.SwinModel(config, add_pooling_layer=False).embeddings.position_embeddings.shape[1]
    return rows == (8 // 4) ** 2 + 1


def fit_swin_absolute_positions(tower) -> None:
    """Give a ``SwinModel`` built with absolute position embeddings one row per patch, as newer releases do and as
    saved checkpoints hold them, where the installed release allots an extra row (see
    :func:`swin_absolute_positions_have_extra_row`). Zeros, as transformers initialises them."""
    positions = getattr(getattr(tower, "embeddings", None), "position_embeddings", None)
    if positions is None or not swin_absolute_positions_have_extra_row():
        return
    rows = tower.embeddings.patch_embeddings.num_patches
    if positions.shape[1] == rows + 1:
        tower.embeddings.position_embeddings = torch.nn.Parameter(
            torch.zeros(1, rows, positions.shape[2], dtype=positions.dtype, device=positions.device))


def swin_block_parameter_names() -> dict[str, str]:
    """Role (``query``, ``key``, ``value``, ``attention_output``, ``relative_position_bias_table``, ``mlp_in``,
    ``mlp_out``) -> the installed ``SwinModel``'s parameter name inside a block (without ``.weight``/``.bias``)."""
    return dict(_SWIN_SPLIT_QKV_NAMES if swin_has_split_qkv() else _SWIN_SELF_ATTENTION_NAMES)
