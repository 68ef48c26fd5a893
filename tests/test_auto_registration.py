"""A bare ``import tag2text`` makes transformers' Auto classes and pipelines find our classes, whatever transformers
imports first, without importing torch or transformers itself. Each case runs in a fresh interpreter with stdin
closed, so that transformers' remote-code question ("[y/N]") fails at once instead of waiting."""

import json
import os
import subprocess
import sys

import pytest

from tiny_factory import draw_image, make_config, make_model, make_processor, make_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved model directory with its processor (config.json carries auto_map: remote code is on offer)."""
    root = tmp_path_factory.mktemp("registration")
    tokenizer = make_tokenizer(root)
    model = make_model(make_config(tokenizer))
    directory = root / "model"
    model.save_pretrained(directory)
    make_processor(tokenizer).save_pretrained(directory)
    draw_image(0).save(root / "image.png")
    assert "auto_map" in json.loads((directory / "config.json").read_text())
    return directory, root / "image.png"


def run(code: str) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registering the Auto classes" not in result.stderr, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_bare_import_then_auto_classes_and_pipeline(saved):
    directory, image = saved
    out = run(f"""
import json, sys
import tag2text
light = "torch" not in sys.modules and "transformers" not in sys.modules
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline
names = [type(AutoConfig.from_pretrained({str(directory)!r})).__name__,
         type(AutoModel.from_pretrained({str(directory)!r})).__name__,
         type(AutoModelForImageTextToText.from_pretrained({str(directory)!r})).__name__,
         type(AutoProcessor.from_pretrained({str(directory)!r})).__name__]
result = pipeline("image-text-to-text", model={str(directory)!r})({str(image)!r}, text="", max_new_tokens=3)
print(json.dumps([light, names, isinstance(result[0]["generated_text"], str)]))
""")
    assert json.loads(out) == [True, ["Tag2TextConfig", "Tag2TextModel", "Tag2TextForCaptioning", "Tag2TextProcessor"],
                               True]


def test_bare_import_when_a_vision_model_loads_the_auto_modules_half_way(saved):
    """modeling_swin imports modeling_layers, which imports the Auto models while modeling_swin (which our
    model needs) is incomplete: registration waits until that import has finished."""
    directory, _ = saved
    out = run(f"""
import tag2text
from transformers import SwinModel
from transformers import AutoModelForImageTextToText
print(type(AutoModelForImageTextToText.from_pretrained({str(directory)!r})).__name__)
""")
    assert out == "Tag2TextForCaptioning"


def test_import_after_transformers_auto_registers_at_once_and_the_finder_goes(saved):
    directory, _ = saved
    out = run(f"""
import json, sys
from transformers import AutoModel
import tag2text
from tag2text import registration
finders = [type(f).__name__ for f in sys.meta_path if type(f).__module__ == registration.__name__]
print(json.dumps([type(AutoModel.from_pretrained({str(directory)!r})).__name__, finders]))
""")
    assert json.loads(out) == ["Tag2TextModel", []]


def test_plain_transformers_import_registers_nothing():
    # Whether ``import transformers`` alone imports torch depends on the release (5.0 does, 5.25 does not):
    # after ``import tag2text`` it must import exactly what it imports without it, and none of our modules.
    alone = run("""
import json, sys
import transformers
print(json.dumps("torch" in sys.modules))
""")
    out = run("""
import json, sys
import tag2text
import transformers
print(json.dumps(["torch" in sys.modules, "tag2text.modeling_tag2text" in sys.modules]))
""")
    assert json.loads(out) == [json.loads(alone), False]


def test_a_submodule_or_a_class_imported_first_registers_without_a_warning():
    """Our modules import transformers from inside themselves: registration waits until they are complete."""
    out = run("""
import json
import tag2text.modeling_tag2text_pretraining
from transformers import CONFIG_MAPPING, AutoModelForPreTraining
registered = ["tag2text" in CONFIG_MAPPING, AutoModelForPreTraining._model_mapping[CONFIG_MAPPING["tag2text"]].__name__]
print(json.dumps(registered))
""")
    assert json.loads(out) == [True, "Tag2TextForPreTraining"]
    out = run("""
from tag2text import Tag2TextProcessor
from transformers import CONFIG_MAPPING
print("tag2text" in CONFIG_MAPPING)
""")
    assert out == "True"
