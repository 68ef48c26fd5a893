"""Shared by the RAM / RAM++ command-line tests: the tiny fixtures converted with ``tag2text convert``."""

from pathlib import Path

from tag2text.hub.cli import main as cli_main

FIXTURE = Path(__file__).parent / "fixtures" / "ram_tiny"


def convert(family, out):
    """Convert the tiny ``family`` ("ram" or "ram_plus") checkpoint made with the original code into ``out``."""
    arguments = ["--log-level", "WARNING", "convert", "--output-dir", str(out),
                 "--checkpoint", str(FIXTURE / f"{family}_state_dict.safetensors"),
                 "--threshold-file", str(FIXTURE / f"{family}_tag_list_threshold.txt"),
                 "--vision-config", str(FIXTURE / "swin_config.json"), "--q2l-config", str(FIXTURE / "q2l_config.json"),
                 "--med-config", str(FIXTURE / "med_config.json"), "--tag-list", str(FIXTURE / "tag_list.txt"),
                 "--tag-list-chinese", str(FIXTURE / "tag_list_chinese.txt")]
    assert cli_main(arguments) == 0
