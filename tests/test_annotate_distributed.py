"""`tag2text caption --output-dir` with two CPU processes (gloo): under `accelerate launch`, every key once;
under torchrun, a run killed with SIGKILL mid-way, then resumed with a different number of processes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from annotate_support import CLI_GENERATE, draw_folder, expected_row, manifest, model_dir, read_output

IMAGES = 40


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import tiny_factory

    root = tmp_path_factory.mktemp("annotate_distributed")
    tokenizer = tiny_factory.make_tokenizer(root)
    processor = tiny_factory.make_processor(tokenizer)
    model = tiny_factory.make_model(tiny_factory.make_config(tokenizer))
    directory = model_dir(root, model, processor)
    paths = draw_folder(root / "images", IMAGES)
    keys = sorted(p.relative_to(root / "images").as_posix() for p in paths)
    return root, directory, keys, model, processor, paths


def _command(processes, directory, images, out, *extra, launcher="torchrun"):
    cli = ["-m", "tag2text.hub.cli", "caption", "--model", str(directory), str(images), "--output-dir", str(out),
           "--num-workers", "1", *CLI_GENERATE, *map(str, extra)]
    if processes == 1:
        return [sys.executable, *cli]
    if launcher == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *cli]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *cli]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _descendants(pid):
    found = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = [int(child) for child in handle.read().split()]
    except OSError:
        return found
    for child in children:
        found.append(child)
        found.extend(_descendants(child))
    return found


@pytest.fixture(scope="module")
def uninterrupted(setup):
    root, directory, _, _, _, _ = setup
    out = root / "uninterrupted"
    _run(_command(2, directory, root / "images", out, "--shard-size", 4, "--batch-size", 2, launcher="accelerate"))
    return out


def test_two_processes_write_every_key_once(setup, uninterrupted):
    root, _, keys, model, processor, paths = setup
    rows = read_output(uninterrupted)
    assert sorted(row["key"] for row in rows) == keys  # every key, exactly once
    names = os.listdir(uninterrupted)
    for rank in (0, 1):
        assert any(name.startswith(f"part-0000{rank}of00002-") for name in names), names
    summary = manifest(uninterrupted)
    assert summary["complete"] and summary["rows"] == IMAGES and summary["runs"][0]["processes"] == 2
    by_key = {row["key"]: row for row in rows}
    for path in paths[:: 8]:  # spot-check against the model's own API
        key = path.relative_to(root / "images").as_posix()
        assert by_key[key]["caption"] == expected_row(model, processor, str(path))["caption"]


def test_killed_run_resumed_with_another_process_count(setup, uninterrupted):
    root, directory, keys, _, _, _ = setup
    out = root / "killed"
    launcher = subprocess.Popen(_command(2, directory, root / "images", out, "--shard-size", 2, "--batch-size", 1),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    victims = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and launcher.poll() is None:
            shards = [n for n in os.listdir(out) if n.startswith("part-")] if out.is_dir() else []
            if len(shards) >= 2:
                break
            time.sleep(0.02)
        victims = _descendants(launcher.pid)  # both processes and their DataLoader workers
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
    finally:
        if launcher.poll() is None:
            try:
                launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
    assert victims and launcher.returncode != 0
    done = read_output(out)
    assert 0 < len(done) < IMAGES, "the run was not killed mid-way"
    assert not (out / "manifest.json").exists()

    _run(_command(1, directory, root / "images", out, "--resume", "--shard-size", 3, "--batch-size", 4))
    rows = read_output(out)
    assert sorted(row["key"] for row in rows) == keys
    expected = {row["key"]: row for row in read_output(uninterrupted)}
    for row in rows:
        assert (row["caption"], row["tags"]) == (expected[row["key"]]["caption"], expected[row["key"]]["tags"])
    names = os.listdir(out)
    assert any(n.startswith("part-00000of00001-") for n in names) and any("of00002-" in n for n in names)
    assert not [n for n in names if n.startswith(".tmp-")]
    summary = manifest(out)
    assert summary["complete"] and summary["runs"][-1]["images"] == IMAGES - len(done)
