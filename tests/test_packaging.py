"""The wheel ships one import namespace, tag2text, and the console script."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_has_only_the_tag2text_namespace(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(tmp_path.glob("tag2text-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"tag2text"}
    for module in ("tag2text/__init__.py", "tag2text/modeling_tag2text.py", "tag2text/processing/__init__.py",
                   "tag2text/hub/cli.py", "tag2text/training/__init__.py", "tag2text/pipeline_tag2text.py",
                   "tag2text/processing_tag2text.py", "tag2text/version_compat.py", "tag2text/modeling_ram.py"):
        assert module in names
    assert "tag2text = tag2text.hub.cli:main" in entry_points
    requirements = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    torch_lines = [line for line in requirements if line.split()[1].startswith("torch")]
    # torch and transformers carry their supported ranges (a bare torch would pull a CUDA build)
    assert torch_lines and all(">=2.13" in line for line in torch_lines)
    assert any("transformers" in line and ">=5.0" in line and "<6" in line for line in requirements)
    assert not any(name in line for line in requirements for name in ("torchvision", "timm"))
