"""Device and dtype choices checked without a GPU: the device of a launched process, pinned memory, --device
cuda where there is no CUDA (one line, exit 2), and --dtype bfloat16 against the model run in bfloat16."""

import json
from types import SimpleNamespace

import pytest
import torch

from annotate_support import CLI_GENERATE, draw_folder, model_dir, read_output
from device_support import assert_rows_match, direct_rows
from tag2text.hub import annotation_run
from tag2text.hub.cli import main
from tag2text.hub.cli_args import UsageError
from tag2text.hub.device_choice import pin_batches, process_device
from tag2text.hub.model_source import load_model


@pytest.mark.parametrize("requested,world,local_rank,chosen", [
    ("cuda", 1, 0, "cuda"),  # one process: the current device
    ("cuda", 4, 2, "cuda:2"),  # torchrun: one process per GPU, by LOCAL_RANK
    ("cuda", 8, 7, "cuda:7"),
    ("cuda:1", 4, 2, "cuda:1"),  # an explicit index is kept
    ("cpu", 4, 2, "cpu"),
    ("mps", 2, 1, "mps"),
])
def test_the_device_of_a_launched_process(requested, world, local_rank, chosen):
    assert process_device(requested, world, local_rank) == chosen


def test_only_batches_for_cuda_are_pinned():
    assert pin_batches("cuda") is True
    assert pin_batches("cpu") is False and pin_batches("mps") is False


def test_annotation_names_cuda_local_rank_and_checks_it():
    # A launch of several processes (what torchrun's WORLD_SIZE and LOCAL_RANK become): plain "cuda" is the
    # process's own GPU, and that GPU is checked. One past the last device is never there, so the check fails
    # here with or without CUDA, naming the device chosen.
    missing = torch.cuda.device_count()
    launch = SimpleNamespace(world=missing + 2, local_rank=missing)
    with pytest.raises(UsageError, match=rf"^--device cuda:{missing}: "):
        annotation_run._device(SimpleNamespace(device="cuda"), launch)
    assert annotation_run._device(SimpleNamespace(device="cpu"), launch) == torch.device("cpu")


def _cuda_value():
    # Whatever this machine has, a CUDA device that is not there.
    return "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


@pytest.mark.parametrize("command", ["caption", "caption --output-dir", "serve"])
def test_a_missing_cuda_device_is_one_line_and_exit_2(command, tmp_path, model, processor, capsys):
    directory = model_dir(tmp_path, model, processor)
    draw_folder(tmp_path / "images", 1)
    argv = {"caption": ["caption", "--model", str(directory), str(tmp_path / "images")],
            "caption --output-dir": ["caption", "--model", str(directory), str(tmp_path / "images"),
                                     "--output-dir", str(tmp_path / "out")],
            "serve": ["serve", "--model", str(directory), "--port", "0"]}[command]
    capsys.readouterr()  # saving the model drew a progress bar
    assert main([*argv, "--device", _cuda_value()]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    name = command.split()[0]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"tag2text {name}: error: --device {_cuda_value()}: "), lines[0]
    assert not (tmp_path / "out").exists()


def test_unknown_dtype_is_refused_naming_the_option(tmp_path, capsys):
    assert main(["caption", "--model", str(tmp_path), str(tmp_path), "--dtype", "float8"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--dtype" in lines[0] and "'float8'" in lines[0], lines


def _bfloat16_rows_and_float32_rows(directory, processor, paths, batch_size):
    rows = {}
    for dtype in (torch.bfloat16, torch.float32):
        loaded = load_model(str(directory), dtype=dtype).eval()
        assert loaded.dtype == dtype
        rows[dtype] = direct_rows(loaded, processor, paths, batch_size)
    return rows[torch.bfloat16], rows[torch.float32]


def test_caption_dtype_bfloat16_runs_the_model_in_bfloat16(tmp_path, model, processor):
    directory = model_dir(tmp_path, model, processor)
    draw_folder(tmp_path / "images", 4)
    out = tmp_path / "rows.jsonl"
    assert main(["caption", "--model", str(directory), str(tmp_path / "images"), "--dtype", "bfloat16",
                 "--batch-size", "2", *CLI_GENERATE, "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    paths = [row["image"] for row in rows]
    bfloat16, float32 = _bfloat16_rows_and_float32_rows(directory, processor, paths, 2)
    assert_rows_match(rows, bfloat16)
    # bfloat16 keeps 8 bits of mantissa: the scores move away from float32's (so the dtype was applied)
    assert any(abs(row["tag_scores"][tag] - want["tag_scores"][tag]) > 1e-5
               for row, want in zip(rows, float32) for tag in want["tag_scores"])


def test_sharded_caption_dtype_bfloat16_runs_the_model_in_bfloat16(tmp_path, model, processor, monkeypatch):
    pinned = []
    real_loader = torch.utils.data.DataLoader

    class RecordingLoader(real_loader):  # the real DataLoader; only what it was asked for is kept
        def __init__(self, *args, **kwargs):
            pinned.append(kwargs.get("pin_memory"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", RecordingLoader)
    directory = model_dir(tmp_path, model, processor)
    draw_folder(tmp_path / "images", 4)
    out = tmp_path / "out"
    assert main(["caption", "--model", str(directory), str(tmp_path / "images"), "--output-dir", str(out),
                 "--dtype", "bfloat16", "--batch-size", "2", "--num-workers", "0", *CLI_GENERATE]) == 0
    assert pinned == [False]  # no CUDA device: nothing pinned
    rows = read_output(out)
    paths = [str(tmp_path / "images" / row["key"]) for row in rows]
    bfloat16, _ = _bfloat16_rows_and_float32_rows(directory, processor, paths, 2)
    assert_rows_match(rows, bfloat16)


def test_training_pins_memory_only_with_an_accelerator(tmp_path, monkeypatch):
    from tag2text.training import arguments

    base = ["--train-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")]

    def pin_memory(accelerator, *argv):
        monkeypatch.setattr(arguments, "_has_accelerator", lambda: accelerator)
        namespace = arguments.argument_parser().parse_args([*base, *argv])
        return arguments.dataclasses_from_namespace(namespace)[2].dataloader_pin_memory

    assert pin_memory(True) is True
    assert pin_memory(False) is False
    assert pin_memory(False, "--dataloader-pin-memory", "true") is True
    assert pin_memory(True, "--dataloader-pin-memory", "false") is False
