"""``import tag2text`` and every ``--help`` stay light (no torch, no transformers); the public names still
import, and taking a class from the package registers the Auto classes. (The seconds are measured by
benchmarks/cli_help.py, not here.)"""

import json
import subprocess
import sys

import pytest

from tag2text.hub.cli import COMMANDS

LIGHT_COMMANDS = sorted(set(COMMANDS) - {"train"})  # train --help lists every TrainingArguments field


def python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


HEAVY = "[m for m in ('torch', 'transformers', 'spacy', 'datasets') if m in sys.modules]"


def test_import_tag2text_is_light():
    assert python(f"import sys, tag2text, tag2text.hub, tag2text.processing, tag2text.training; print({HEAVY})") == "[]"


@pytest.mark.parametrize("command", [""] + LIGHT_COMMANDS)
def test_help_imports_nothing_heavy(command):
    argv = ([command] if command else []) + ["--help"]
    code = (f"import sys, contextlib, io\nfrom tag2text.hub.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()) as out:\n    code = main({argv!r})\n"
            f"assert code == 0 and 'usage: tag2text' in out.getvalue(), code\nprint({HEAVY})")
    assert python(code) == "[]"


def test_public_names_import_and_register_the_auto_classes():
    code = """
import json, sys
import tag2text
from transformers import CONFIG_MAPPING
before = "tag2text" in CONFIG_MAPPING
from tag2text import Tag2TextForCaptioning, Tag2TextProcessor, build_tokenizer, preset_config, PRESETS
from transformers import AutoConfig, AutoModelForImageTextToText
config = AutoConfig.for_model("tag2text")
model_class = AutoModelForImageTextToText._model_mapping[type(config)]
print(json.dumps([before, type(config).__name__, model_class is Tag2TextForCaptioning, sorted(tag2text.__all__) ==
                  tag2text.__all__, all(hasattr(tag2text, name) for name in tag2text.__all__)]))
"""
    # A bare ``import tag2text`` registers once transformers' Auto modules load (tests/test_auto_registration.py).
    assert json.loads(python(code)) == [True, "Tag2TextConfig", True, True, True]


def test_register_auto_classes_explicitly():
    code = """
import tag2text
from transformers import CONFIG_MAPPING
tag2text.register_auto_classes()
print("tag2text" in CONFIG_MAPPING)
"""
    assert python(code) == "True"


def test_unknown_name_is_an_attribute_error():
    import tag2text

    with pytest.raises(AttributeError, match="no attribute 'Tag2TextNothing'"):
        tag2text.Tag2TextNothing  # noqa: B018
