"""Command-line tools and Hub helpers of Tag2Text (``tag2text.hub``).

The Python API is imported lazily, so that ``tag2text --help`` and the light subcommands do not pay for
importing torch and transformers:

- :func:`convert_checkpoint`: original ``tag2text_swin_14m.pth`` -> complete model directory;
- :func:`convert_ram_checkpoint`: an original RAM / RAM++ state dict (:func:`detect_family` tells which) -> the same;
- :func:`push_model_directory`: upload a model directory to the Hub;
- :func:`render_model_card`: the README.md of a model;
- :func:`export_onnx`: ONNX graphs and deployment files for :class:`tag2text.onnx.OnnxTag2Text`;
- :func:`generate_like_original`: captions with the released beam-search scoring (transformers 4.26);
- :func:`convert_state_dict`, :func:`config_from_original`, :func:`load_original_checkpoint`: the parts.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

_EXPORTS = {
    "convert_checkpoint": ".conversion",
    "ConversionReport": ".conversion",
    "CheckpointDownloadError": ".conversion",
    "download_released_checkpoint": ".conversion",
    "load_original_checkpoint": ".conversion",
    "RELEASED_CHECKPOINT_URL": ".conversion",
    "convert_state_dict": ".checkpoint_mapping",
    "expected_shapes": ".checkpoint_mapping",
    "load_converted_state_dict": ".checkpoint_mapping",
    "unwrap_state_dict": ".checkpoint_mapping",
    "CheckpointConversionError": ".checkpoint_mapping",
    "convert_ram_checkpoint": ".ram_conversion",
    "convert_ram_state_dict": ".ram_checkpoint_mapping",
    "detect_family": ".ram_checkpoint_mapping",
    "ram_config_from_original": ".ram_original_config",
    "read_threshold_file": ".ram_original_config",
    "config_from_original": ".original_config",
    "read_tag_list": ".original_config",
    "OriginalConfigError": ".original_config",
    "push_model_directory": ".upload",
    "check_model_directory": ".upload",
    "ModelDirectoryError": ".upload",
    "render_model_card": ".model_card",
    "export_onnx": ".onnx_export",
    "quantize_export": ".onnx_export",
    "generate_like_original": "..generation_original",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
