"""The README's "Fine-tune with your own script" section, run as written: its python blocks, in order, in one
fresh interpreter, offline, with stdin closed (a remote-code prompt would fail instead of waiting)."""

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Fine-tune with your own script"


def section_code() -> str:
    text = README.read_text(encoding="utf-8")
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert len(blocks) >= 3, f"expected the Trainer, accelerate and collator blocks, found {len(blocks)}"
    return "\n".join(blocks)


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", line)]


def test_readme_finetune_section_runs_as_written(tmp_path):
    script = tmp_path / "finetune.py"
    script.write_text(section_code(), encoding="utf-8")
    # One thread: the snippet's tiny model is faster that way on a shared CPU (no effect on the results checked).
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = {line.split(" ", 1)[0] if not line.startswith("pre-training") else "pre-training": line
             for line in result.stdout.splitlines()}

    first, last = _numbers(lines["training"])
    assert math.isfinite(first) and last < first, lines["training"]
    (eval_loss,) = _numbers(lines["eval_loss"])
    assert math.isfinite(eval_loss) and eval_loss > 0

    caption = ast.literal_eval(lines["caption"].split(" ", 1)[1])
    assert isinstance(caption[0]["generated_text"], str) and caption[0]["generated_text"].strip()

    first, last = _numbers(lines["accelerate"])
    assert math.isfinite(first) and last < first, lines["accelerate"]

    (pretraining_eval_loss,) = _numbers(lines["pre-training"])
    assert math.isfinite(pretraining_eval_loss) and pretraining_eval_loss > 0
