"""The supported transformers/torch range (one module, one line for anything outside it) and the remote-code
payload's file list (what every transformers release's dynamic-module loader copies)."""

import ast
import configparser
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from transformers.dynamic_module_utils import get_relative_import_files, get_relative_imports

import tiny_factory
from tag2text import version_compat
from tag2text.version_compat import UnsupportedVersionError, check_versions, release, unsupported_versions_message

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text, expected", [("5.0.0", (5, 0, 0)), ("2.13.0+cpu", (2, 13, 0)),
                                            ("5.1.0.dev0", (5, 1, 0)), ("5.0.0rc1", (5, 0, 0)), ("6", (6,))])
def test_release_numbers(text, expected):
    assert release(text) == expected


@pytest.mark.parametrize("transformers_version", ["4.26.1", "4.57.6", "5.0.0", "5.0.0rc1", "5.12.3", "5.24.0",
                                                  "5.25.0", "5.99.1", "6.0.0", "6.1.0"])
def test_transformers_range_agrees_with_packaging(transformers_version):
    # Independent computation: packaging's reading of the declared specifier (pre-releases of a supported release
    # count as that release, as pip installs them only on request).
    supported = SpecifierSet(version_compat.SUPPORTED_TRANSFORMERS).contains(
        Version(transformers_version).base_version)
    message = unsupported_versions_message(transformers_version, "2.13.0")
    assert (message is None) == supported


@pytest.mark.parametrize("transformers_version, torch_version, named", [
    ("4.57.6", "2.13.0+cpu", ["'transformers>=5.0,<6'"]),
    ("6.0.0", "2.15.0", ["'transformers>=5.0,<6'"]),
    ("5.0.0", "2.12.1", ["'torch>=2.13'"]),
    ("4.57.6", "2.8.0", ["'transformers>=5.0,<6'", "'torch>=2.13'"]),
])
def test_an_unsupported_version_is_one_line_naming_installed_and_supported(transformers_version, torch_version,
                                                                           named):
    with pytest.raises(UnsupportedVersionError) as caught:
        check_versions(transformers_version, torch_version)
    message = str(caught.value)
    assert isinstance(caught.value, ImportError)
    assert "\n" not in message
    assert f"transformers {transformers_version}" in message and f"torch {torch_version}" in message
    assert "transformers>=5.0,<6" in message and "torch>=2.13" in message
    assert message.endswith("(pip install " + " ".join(named) + ")")


@pytest.mark.parametrize("transformers_version, torch_version", [("5.0.0", "2.13.0"), ("5.25.0", "2.15.0+cu128"),
                                                                 ("5.24.0", "3.0.0")])
def test_supported_versions_pass(transformers_version, torch_version):
    assert unsupported_versions_message(transformers_version, torch_version) is None
    check_versions(transformers_version, torch_version)


def test_the_installed_versions_are_supported_and_recorded():
    assert version_compat.TRANSFORMERS_VERSION == release(transformers.__version__)
    assert version_compat.TORCH_VERSION == release(torch.__version__)
    check_versions()


def test_setup_cfg_declares_the_same_range():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    requirements = {}
    for line in parser["options"]["install_requires"].splitlines():
        if line.strip():
            requirement = Requirement(line.strip())
            requirements[requirement.name] = requirement.specifier
    assert requirements["transformers"] == SpecifierSet(version_compat.SUPPORTED_TRANSFORMERS)
    assert requirements["torch"] == SpecifierSet(version_compat.SUPPORTED_TORCH)


def test_swin_names_are_those_of_the_installed_swin():
    names = {name for name, _ in transformers.SwinModel(transformers.SwinConfig(
        image_size=8, patch_size=4, embed_dim=4, depths=[1], num_heads=[1], window_size=2)).named_parameters()}
    block = "encoder.layers.0.blocks.0."
    for role, name in version_compat.swin_block_parameter_names().items():
        suffix = "" if role == "relative_position_bias_table" else ".weight"
        assert block + name + suffix in names, (role, name)


def test_generation_cache_argument_is_the_one_generate_passes():
    import inspect

    parameters = inspect.signature(transformers.GenerationMixin.prepare_inputs_for_generation).parameters
    assert version_compat.generation_cache_argument() in parameters
    inputs = version_compat.model_inputs_for_forward(
        {version_compat.generation_cache_argument(): "C", "cache_position": 1, "inputs_embeds": None, "x": 2})
    assert inputs == {"cache": "C", "x": 2}
    kept = version_compat.model_inputs_for_forward({"inputs_embeds": "E"})
    assert kept == {"inputs_embeds": "E"}  # given embeddings reach forward, which names them as unsupported


# -- the payload ----------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, model, processor):
    directory = tmp_path / "model"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _entry_modules(directory) -> set:
    """Modules that transformers loads by name from a saved directory (auto_map and custom pipelines)."""
    config = json.loads((directory / "config.json").read_text())
    processor_config = json.loads((directory / "processor_config.json").read_text())
    references = list(config["auto_map"].values()) + list(processor_config["auto_map"].values())
    references += [pipe["impl"] for pipe in config.get("custom_pipelines", {}).values()]
    image_processor = processor_config.get("image_processor", {}).get("auto_map", {})
    references += list(image_processor.values())
    return {reference.split(".")[0] + ".py" for reference in references}


def test_every_relative_import_of_the_payload_is_a_saved_sibling(saved):
    """Relative imports anywhere in a payload file (transformers' loaders find them by a regular expression over
    the whole text, function bodies included) are ``from .sibling import name`` of a file the save wrote."""
    files = {name for name in os.listdir(saved) if name.endswith(".py")}
    assert {"version_compat.py", "processing_tag2text.py", "image_processing_tag2text.py",
            "image_loading.py", "text_conventions.py"} <= files
    for name in files:
        tree = ast.parse((saved / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                where = f"{name}:{node.lineno}"
                # "from . import x" and "from ..x" are invisible to (or escape) the loaders' copying
                assert node.level == 1 and node.module, f"{where}: only 'from .sibling import name'"
                assert f"{node.module}.py" in files, f"{where}: .{node.module} is not in the saved directory"
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("tag2text") for alias in node.names), name
            if isinstance(node, ast.ImportFrom) and not node.level:
                assert not (node.module or "").startswith("tag2text"), f"{name} imports {node.module}"


def test_each_entry_module_imports_its_whole_closure_directly(saved):
    """transformers 5.0 and 4.x copy only a loaded module's direct relative imports into the remote-code cache;
    transformers' own functions tell what they copy (direct) and what the module needs (recursive)."""
    entries = _entry_modules(saved)
    assert {"configuration_tag2text.py", "modeling_tag2text.py", "processing_tag2text.py",
            "image_processing_tag2text.py", "pipeline_tag2text.py"} <= entries
    for entry in entries:
        path = str(saved / entry)
        direct = {os.path.basename(name) + ".py" for name in get_relative_imports(path)}
        closure = {os.path.basename(name) for name in get_relative_import_files(path)} - {entry}
        assert closure <= direct, f"{entry} needs {sorted(closure - direct)} only through other siblings"
        assert "version_compat.py" in direct, f"{entry} must import version_compat (the range check) itself"


OLD_TRANSFORMERS_SCRIPT = textwrap.dedent(
    """
    import sys
    from transformers import AutoConfig, AutoProcessor
    # What the payload sees on the last 4.x release (set on the module object in sys.modules, which importing the
    # Auto classes may replace).
    sys.modules["transformers"].__version__ = "4.57.6"
    for load in (AutoConfig.from_pretrained, AutoProcessor.from_pretrained):
        try:
            load(sys.argv[1], trust_remote_code=True)
        except ImportError as error:
            print(type(error).__name__ + ": " + str(error))
        else:
            print("loaded")
    """
)


def test_a_saved_directory_under_an_unsupported_transformers_stops_with_one_line(saved, tmp_path):
    script = tmp_path / "old.py"
    script.write_text(OLD_TRANSFORMERS_SCRIPT)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(script), str(saved)], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("UnsupportedVersionError: Tag2Text needs transformers>=5.0,<6 and torch>=2.13; "
                               "installed: transformers 4.57.6"), line


CLI_SCRIPT = textwrap.dedent(
    """
    import sys
    from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline  # noqa: F401 (may replace the module)
    sys.modules["transformers"].__version__ = "4.57.6"
    from tag2text.hub.cli import main
    sys.exit(main(["caption", "--model", sys.argv[1], sys.argv[2]]))
    """
)


def test_the_cli_under_an_unsupported_transformers_exits_2_with_one_line(saved, tmp_path):
    image = tmp_path / "image.png"
    tiny_factory.draw_image(0).save(image)
    script = tmp_path / "cli.py"
    script.write_text(CLI_SCRIPT)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(script), str(saved), str(image)], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert ("tag2text caption: error: Tag2Text needs transformers>=5.0,<6 and torch>=2.13; installed: transformers "
            "4.57.6") in result.stderr.splitlines()[-1]


def test_swin_absolute_positions_are_one_row_per_patch_and_run():
    """The 'small' preset's Swin uses absolute position embeddings; transformers 5.0 allots a row too many and
    its forward fails. After the fit every release has one row per patch (what checkpoints hold) and runs."""
    from tag2text.modeling_tag2text import _vision_tower
    from tag2text import preset_config

    config = preset_config("small")
    assert config.vision_config.use_absolute_embeddings
    config.vision_config.update({"image_size": 64, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2],
                                 "window_size": 4})
    tower = _vision_tower(config)
    patches = tower.embeddings.patch_embeddings.num_patches
    assert tuple(tower.embeddings.position_embeddings.shape) == (1, patches, 16)
    assert torch.count_nonzero(tower.embeddings.position_embeddings) == 0  # transformers' initialisation
    with torch.no_grad():
        out = tower(pixel_values=torch.randn(2, 3, 64, 64))
    assert out.last_hidden_state.shape[0] == 2
