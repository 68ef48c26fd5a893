"""The saved directory must load where this project is not importable (trust_remote_code), and the
image-to-text pipeline must caption an image alone."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline

import tiny_factory
from tag2text import Tag2TextForCaptioning, Tag2TextModel

PAYLOAD = {
    "configuration_tag2text.py",
    "modeling_tag2text.py",
    "modeling_tag2text_text.py",
    "generation_original.py",
    "pipeline_tag2text.py",
    "processing_tag2text.py",
    "image_processing_tag2text.py",
    "image_loading.py",
    "text_conventions.py",
    "tag_output.py",
    "version_compat.py",
}


@pytest.fixture
def saved(tmp_path, model, processor):
    directory = tmp_path / "model"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_payload_files_and_auto_map(saved):
    files = set(os.listdir(saved))
    assert PAYLOAD <= files
    assert {"config.json", "model.safetensors", "generation_config.json", "processor_config.json",
            "tokenizer.json"} <= files
    config = json.loads((saved / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_tag2text.Tag2TextConfig",
        "AutoModel": "modeling_tag2text.Tag2TextModel",
        "AutoModelForImageTextToText": "modeling_tag2text.Tag2TextForCaptioning",
    }
    assert config["custom_pipelines"]["image-to-text"]["impl"] == "pipeline_tag2text.Tag2TextCaptionPipeline"
    processor_config = json.loads((saved / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_tag2text.Tag2TextProcessor"


def test_auto_classes_with_the_package_installed(saved, model):
    assert type(AutoModelForImageTextToText.from_pretrained(saved)) is Tag2TextForCaptioning
    assert type(AutoModel.from_pretrained(saved)) is Tag2TextModel
    assert type(AutoProcessor.from_pretrained(saved)).__name__ == "Tag2TextProcessor"


CLEAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from PIL import Image
    assert "tag2text" not in sys.modules
    try:
        import tag2text  # noqa: F401
        raise SystemExit("tag2text must not be importable here")
    except ImportError:
        pass
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline
    directory = sys.argv[1]
    model = AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
    base = AutoModel.from_pretrained(directory, trust_remote_code=True)
    image = Image.open(sys.argv[2])
    pixel_values = processor(images=image)["pixel_values"]
    ids = model.generate(pixel_values, num_beams=1, max_new_tokens=5, min_new_tokens=5)
    captioner = pipeline("image-to-text", model=directory, trust_remote_code=True)
    chat = pipeline("image-text-to-text", model=directory, trust_remote_code=True)
    print(json.dumps({
        "classes": [type(model).__name__, type(processor).__name__, type(base).__name__, type(captioner).__name__],
        "module": type(model).__module__,
        "ids": ids.tolist(),
        "pipeline": captioner(image, num_beams=1, max_new_tokens=5, min_new_tokens=5),
        "steered": captioner(image, tags="dog | sky", num_beams=1, max_new_tokens=5, min_new_tokens=5),
        "chat": chat(image, text="", max_new_tokens=5, generate_kwargs={"min_new_tokens": 5, "num_beams": 1}),
    }))
    """
)


def test_remote_code_in_a_clean_interpreter(saved, tmp_path, model, processor):
    image_path = tmp_path / "image.png"
    image = tiny_factory.draw_image(0)
    image.save(image_path)
    script = tmp_path / "clean.py"
    script.write_text(CLEAN_SCRIPT)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    # -I: isolated mode, so neither the repository nor the editable install's finder path entry applies
    site = [p for p in sys.path if p.endswith("site-packages")]
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p] + %r;"
        "import importlib.machinery as m;"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()"
        " and 'editable' not in getattr(f, '__name__', '').lower()];"
        "sys.argv = [%r, %r, %r]; exec(open(%r).read())"
    ) % (site, str(script), str(saved), str(image_path), str(script))
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["classes"] == ["Tag2TextForCaptioning", "Tag2TextProcessor", "Tag2TextModel",
                                 "Tag2TextCaptionPipeline"]
    assert report["module"].startswith("transformers_modules")
    local = model.generate(processor(images=image)["pixel_values"], num_beams=1, max_new_tokens=5, min_new_tokens=5)
    assert report["ids"] == local.tolist()
    caption = processor.decode_captions(local)[0]
    assert report["pipeline"] == [{"generated_text": caption, "tags": ["cat", "grass", "red"]}]
    assert report["steered"][0]["tags"] == ["dog", "sky"]
    assert report["chat"][0]["generated_text"].strip() == caption


def test_pipeline_with_the_package_installed(saved, model, processor):
    image = tiny_factory.draw_image(1)
    captioner = pipeline("image-to-text", model=str(saved), trust_remote_code=True)
    result = captioner(image, num_beams=2, max_new_tokens=4, min_new_tokens=4)
    expected = processor.decode_captions(
        model.generate(processor(images=image)["pixel_values"], num_beams=2, max_new_tokens=4, min_new_tokens=4)
    )[0]
    assert result == [{"generated_text": expected, "tags": ["cat", "grass", "red"]}]
    batch = captioner([image, image], num_beams=1, max_new_tokens=3)
    assert len(batch) == 2 and batch[0] == batch[1]
    prompt = pipeline("image-text-to-text", model=str(saved))
    out = prompt(image, text="a picture of", max_new_tokens=3, generate_kwargs={"min_new_tokens": 3, "num_beams": 1})
    assert out[0]["generated_text"].startswith("a picture of")
