"""The CUDA paths, run for real on a GPU: caption and annotate with --device cuda in float32 and bfloat16, a few
``tag2text train --bf16`` steps, a request served by a model on CUDA.

Marked ``gpu``: the CPU suite deselects them; ``pytest --gpu tests/test_gpu.py`` (what benchmarks/gpu_check.sh
runs) runs them, and without CUDA they fail, they are not skipped.

What each command prints on CUDA is compared with the model's own API (``model.tag`` and ``model.generate``)
run on the same device, dtype and batches: the same kernels give the same numbers, so the rows must match. Against
the CPU in float32 only the tags are compared, with scores within a tolerance (TF32 convolutions and bfloat16
round differently, and a caption may then take another word).
"""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import training_support
from annotate_support import CLI_GENERATE, draw_folder, model_dir, read_output
from device_support import assert_rows_match, direct_rows

# The package's modules are imported inside the tests: the CPU suite collects this file (and deselects its tests),
# so an import here that fails would stop the CPU suite too.

pytestmark = pytest.mark.gpu

# Largest difference of a tag score from the CPU's float32 score: TF32 convolutions (on by default in cuDNN)
# keep 10 bits of mantissa, bfloat16 8.
CPU_SCORE_TOLERANCE = {"float32": 5e-3, "bfloat16": 3e-2}


@pytest.fixture(scope="module", autouse=True)
def _cuda():
    if not torch.cuda.is_available():
        pytest.fail(f"the gpu tests need a CUDA GPU; torch {torch.__version__} sees none", pytrace=False)


@pytest.fixture
def setup(tmp_path, tokenizer, processor):
    """A model directory of a tiny model whose captions depend on the image, and six drawn images."""
    from serving_support import responsive_model

    model = responsive_model(tokenizer)
    directory = model_dir(tmp_path, model, processor)
    draw_folder(tmp_path / "images", 6)
    return SimpleNamespace(model=model, directory=directory, images=tmp_path / "images")


def _cuda_model(directory, dtype):
    """The model as the commands load it, on the GPU."""
    from tag2text.hub.model_source import load_model

    return load_model(str(directory), dtype=getattr(torch, dtype)).to("cuda").eval()


def _assert_tags_as_on_the_cpu(rows, cpu_model, processor, paths, dtype):
    assert_rows_match(rows, direct_rows(cpu_model, processor, paths, len(paths)),
                      score_tolerance=CPU_SCORE_TOLERANCE[dtype], captions=False)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_caption_on_cuda(setup, processor, tmp_path, dtype):
    from tag2text.hub.cli import main

    out = tmp_path / "rows.jsonl"
    assert main(["caption", "--model", str(setup.directory), str(setup.images), "--device", "cuda", "--dtype", dtype,
                 "--batch-size", "4", *CLI_GENERATE, "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    paths = [row["image"] for row in rows]
    assert len(rows) == 6
    assert_rows_match(rows, direct_rows(_cuda_model(setup.directory, dtype), processor, paths, 4))
    _assert_tags_as_on_the_cpu(rows, setup.model, processor, paths, dtype)


@pytest.mark.parametrize("dtype,autocast", [("float32", "none"), ("bfloat16", "none"), ("float32", "bfloat16")])
def test_annotate_on_cuda_pins_batches(setup, processor, tmp_path, monkeypatch, dtype, autocast):
    from tag2text.hub.cli import main

    pinned = []
    real_loader = torch.utils.data.DataLoader

    class RecordingLoader(real_loader):  # the real DataLoader; only what it was asked for is kept
        def __init__(self, *args, **kwargs):
            pinned.append(kwargs.get("pin_memory"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", RecordingLoader)
    out = tmp_path / "out"
    assert main(["caption", "--model", str(setup.directory), str(setup.images), "--output-dir", str(out),
                 "--device", "cuda", "--dtype", dtype, "--autocast", autocast, "--batch-size", "4",
                 "--num-workers", "2", "--shard-size", "4", *CLI_GENERATE]) == 0
    assert pinned == [True]
    rows = read_output(out)  # in the order they were annotated: batches of 4
    paths = [str(setup.images / row["key"]) for row in rows]
    assert len(rows) == 6
    assert_rows_match(rows, direct_rows(_cuda_model(setup.directory, dtype), processor, paths, 4, autocast))
    _assert_tags_as_on_the_cpu(rows, setup.model, processor, paths, "float32" if autocast == "none" and
                               dtype == "float32" else "bfloat16")
    with open(out / "manifest.json", encoding="utf-8") as handle:
        manifest = json.load(handle)
    assert (manifest["annotated"], manifest["failed"], manifest["options"]["device"]) == (6, 0, "cuda")


def test_a_launched_process_takes_the_gpu_of_its_local_rank():
    from tag2text.hub import annotation_run
    from tag2text.hub.cli_args import UsageError

    count = torch.cuda.device_count()
    args = SimpleNamespace(device="cuda")
    assert annotation_run._device(args, SimpleNamespace(world=2, local_rank=0)) == torch.device("cuda:0")
    with pytest.raises(UsageError, match=rf"--device cuda:{count}: only {count} CUDA device"):
        annotation_run._device(args, SimpleNamespace(world=count + 1, local_rank=count))


def test_train_bf16_steps_on_cuda(tmp_path):
    from tag2text.hub.cli import main
    from tag2text.training import arguments

    train = training_support.synthetic_split(tmp_path / "train", 16, seed=1)
    training_support.add_tags_from_truth(train)
    out = tmp_path / "run"
    argv = ["train", "--train-dir", str(train), "--output-dir", str(out), "--model-config",
            training_support.write_architecture(tmp_path), "--tokenizer", "from-captions",
            "--per-device-train-batch-size", "4", "--report-to", "none", "--learning-rate", "1e-3",
            "--disable-tqdm", "true", "--seed", "3", "--bf16", "--max-steps", "3", "--logging-steps", "1",
            "--save-strategy", "no"]
    # With an accelerator the Trainer's DataLoader pins its batches by default.
    assert arguments.dataclasses_from_namespace(
        arguments.argument_parser().parse_args(argv[1:]))[2].dataloader_pin_memory is True
    torch.cuda.reset_peak_memory_stats()
    assert main(argv) == 0
    assert torch.cuda.max_memory_allocated() > 0  # the steps ran on the GPU
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses), history
    # bf16 is mixed precision: the weights stay float32 and are saved so
    weights = load_file(out / "model.safetensors")
    assert weights and {tensor.dtype for tensor in weights.values()} == {torch.float32}


def test_a_request_served_on_cuda(tokenizer, processor, tmp_path):
    from serving_support import RunningServer, post_image, request, responsive_model, scene
    from tag2text.hub.serving_model import ServingModel

    directory = model_dir(tmp_path, responsive_model(tokenizer), processor)
    served = ServingModel.load(str(directory), device="cuda", dtype="bfloat16")
    image_file = tmp_path / "scene.png"
    scene(3).save(image_file)
    with RunningServer(served.model, served.processor) as server:
        status, health = request(server.url + "/health")
        code, answer = post_image(server.url + "/v1/caption", image_file.read_bytes(), num_beams="1",
                                  max_new_tokens="8")
    assert status == 200 and health["device"] == "cuda:0" and health["dtype"] == "bfloat16"
    assert code == 200, answer
    expected = direct_rows(served.model, served.processor, [image_file], 1,
                           generate={"num_beams": 1, "max_new_tokens": 8})
    assert_rows_match([answer], expected)
