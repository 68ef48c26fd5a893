"""The Trainer, the commands and fault tolerance, run for real: Trainer, accelerate, gloo processes, SIGKILL."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import training_support as support
from tag2text.hub.cli import main as cli_main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tagged synthetic train split (20 images), an eval split (8) and the tiny architecture."""
    root = tmp_path_factory.mktemp("trainer-data")
    train = support.synthetic_split(root / "train", 20, seed=1)
    support.add_tags_from_truth(train)
    evaluation = support.synthetic_split(root / "eval", 8, seed=2)
    support.add_tags_from_truth(evaluation)
    return {"train": train, "eval": evaluation, "arch": support.write_architecture(root)}


def _train_argv(data, out, *extra):
    return ["train", "--train-dir", str(data["train"]), "--output-dir", str(out), "--model-config", data["arch"],
            "--tokenizer", "from-captions", "--per-device-train-batch-size", "4", "--use-cpu", "--report-to", "none",
            "--learning-rate", "1e-3", "--disable-tqdm", "true", "--seed", "3", *extra]


def test_train_command_logs_components_evaluates_and_saves_a_loadable_model(data, tmp_path):
    from transformers import pipeline

    from tag2text import Tag2TextForCaptioning, Tag2TextProcessor

    out = tmp_path / "run"
    code = cli_main(_train_argv(data, out, "--eval-dir", str(data["eval"]), "--max-steps", "4", "--logging-steps", "2",
                                "--eval-strategy", "steps", "--eval-steps", "4", "--eval-num-beams", "1",
                                "--per-device-eval-batch-size", "8", "--save-strategy", "no",
                                "--loss-weights", "tag=1,lm=1,itc=0.5,itm=0.5", "--tag-loss-scale", "batch"))
    assert code == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    train_logs = [h for h in history if "loss" in h]
    assert len(train_logs) == 2
    for log in train_logs:
        assert {"loss_tag", "loss_lm", "loss_itc", "loss_itm"} <= set(log) and log["itc_global_batch"] == 4
        # The logged total is the weighted sum of the logged components (tag loss / batch size).
        expected = log["loss_tag"] / 4 + log["loss_lm"] + 0.5 * log["loss_itc"] + 0.5 * log["loss_itm"]
        assert log["loss"] == pytest.approx(expected, rel=0.02)
    evaluation = [h for h in history if "eval_loss" in h][-1]
    for key in ("eval_loss_tag", "eval_loss_lm", "eval_loss_itc", "eval_loss_itm", "eval_tag_mAP", "eval_tag_OF1",
                "eval_caption_Bleu_4", "eval_caption_CIDEr", "eval_retrieval_img_r1", "eval_retrieval_txt_r10"):
        assert key in evaluation, key
    assert evaluation["eval_num_images"] == 8
    assert (out / "tag_list.txt").read_text().split("\n")[0]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["samples_per_process"] == [16]

    model = Tag2TextForCaptioning.from_pretrained(out)
    processor = Tag2TextProcessor.from_pretrained(out)
    assert model.config.tag_names == (out / "tag_list.txt").read_text().split()
    from PIL import Image

    image = Image.open(next(data["eval"].glob("*.png")))
    result = pipeline("image-to-text", model=str(out), trust_remote_code=True)(image, num_beams=1, max_new_tokens=4)
    expected = processor.decode_captions(model.generate(processor(images=image)["pixel_values"], num_beams=1,
                                                        max_new_tokens=4))[0]
    assert result[0]["generated_text"] == expected

    metrics_file = tmp_path / "metrics.json"
    code = cli_main(["evaluate", "--model", str(out), "--data-dir", str(data["eval"]), "--output", str(metrics_file),
                     "--num-beams", "1", "--no-meteor", "--predictions", str(tmp_path / "pred.json")])
    assert code == 0
    metrics = json.loads(metrics_file.read_text())["metrics"]
    assert metrics["num_images"] == 8 and 0 <= metrics["tag_mAP"] <= 100 and metrics["caption_METEOR"] is None
    assert metrics["retrieval_num_texts"] == 24
    predictions = json.loads((tmp_path / "pred.json").read_text())
    assert len(predictions) == 8 and all("caption" in p and "tags" in p for p in predictions)


def test_non_finite_loss_stops_naming_step_and_component_after_saving(data, tmp_path):
    from tag2text import Tag2TextForCaptioning
    from tag2text.training import NonFiniteLossError
    from tag2text.training.arguments import DataArguments, ModelArguments, Tag2TextTrainingArguments
    from tag2text.training.training_run import prepare_training

    setup = prepare_training(
        ModelArguments(model_config=data["arch"], tokenizer="from-captions"),
        DataArguments(train_dir=str(data["train"]), augment=False),
        Tag2TextTrainingArguments(output_dir=str(tmp_path / "nan"), max_steps=6, per_device_train_batch_size=4,
                                  use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True),
    )
    trainer = setup.trainer

    def poison(module, inputs, output):  # the third optimisation step's ITM logits turn NaN
        return output * float("nan") if trainer.state.global_step == 2 else output

    setup.model.itm_head.register_forward_hook(poison)
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.train()
    message = str(caught.value)
    assert "step 3" in message and "loss_itm" in message and "loss_tag" not in message.split("(this process")[0]
    saved = tmp_path / "nan" / "checkpoint-2"
    assert str(saved) in message and (saved / "optimizer.pt").is_file()
    reloaded = Tag2TextForCaptioning.from_pretrained(saved)
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())


def test_checkpoint_reload_restores_every_weight_including_the_swin_tower(data, tmp_path):
    """transformers saves Swin's attention under legacy names (attention.self.query); the Trainer's plain
    load_state_dict would skip them. Resume and load-best-model must restore every tensor."""
    from tag2text.training.arguments import DataArguments, ModelArguments, Tag2TextTrainingArguments
    from tag2text.training.training_run import prepare_training

    setup = prepare_training(
        ModelArguments(model_config=data["arch"], tokenizer="from-captions"),
        DataArguments(train_dir=str(data["train"]), augment=False),
        Tag2TextTrainingArguments(output_dir=str(tmp_path / "ckpt"), max_steps=1, per_device_train_batch_size=4,
                                  use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True),
    )
    trainer, model = setup.trainer, setup.model
    trainer.save_model(str(tmp_path / "saved"))
    saved_names = set(load_file(str(tmp_path / "saved" / "model.safetensors")))
    assert any(".attention.self.query." in name for name in saved_names)  # the legacy layout this guards against
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for loader in (lambda: trainer._load_from_checkpoint(str(tmp_path / "saved")), trainer._load_best_model):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)
        trainer.state.best_model_checkpoint = str(tmp_path / "saved")
        loader()
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, expected[k])]
        assert changed == []
    # the decoder's tie survives the reload (one tensor, so one optimizer state)
    assert model.get_output_embeddings().weight is model.text_decoder.bert.embeddings.word_embeddings.weight


RESUME_DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys
    from transformers import TrainerCallback
    from tag2text.training.arguments import DataArguments, ModelArguments, Tag2TextTrainingArguments
    from tag2text.training.training_run import prepare_training, run_training

    train_dir, arch, out, kill_at, resume, batches = sys.argv[1:7]
    setup = prepare_training(
        ModelArguments(model_config=arch, tokenizer="from-captions"),
        DataArguments(train_dir=train_dir, augment=True, shuffle_tags=True),
        Tag2TextTrainingArguments(output_dir=out, max_steps=8, per_device_train_batch_size=4, save_strategy="steps",
                                  save_steps=3, logging_steps=1, use_cpu=True, report_to="none", seed=7,
                                  learning_rate=2e-3, disable_tqdm=True,
                                  resume_from_checkpoint=None if resume == "-" else resume),
    )
    collator = setup.collator

    def recording(records):  # which samples each step trains on, to compare data order
        with open(batches, "a") as handle:
            handle.write(json.dumps([int(r["index"]) for r in records]) + "\\n")
        return collator(records)

    setup.trainer.data_collator = recording

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(kill_at):
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no final save: as a crash

    setup.trainer.add_callback(KillAt())
    run_training(setup)
    """
)


def test_resume_after_sigkill_reaches_the_same_weights(data, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(RESUME_DRIVER)
    env = support.subprocess_env()

    def launch(out, kill_at, resume, batches):
        return subprocess.Popen([support.PYTHON, str(driver), str(data["train"]), data["arch"], str(out), str(kill_at),
                                 resume, str(batches)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    # The uninterrupted run and the run that is killed after step 5 go side by side.
    whole = launch(tmp_path / "whole", 0, "-", tmp_path / "whole.jsonl")
    killed = launch(tmp_path / "crash", 5, "-", tmp_path / "crash.jsonl")
    whole_log = whole.communicate(timeout=600)[0]
    killed_log = killed.communicate(timeout=600)[0]
    assert whole.returncode == 0, whole_log[-3000:]
    assert killed.returncode == -9, killed_log[-3000:]  # SIGKILL
    assert not (tmp_path / "crash" / "model.safetensors").exists()
    resumed = launch(tmp_path / "crash", 0, str(tmp_path / "crash" / "checkpoint-3"), tmp_path / "resumed.jsonl")
    resumed_log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, resumed_log[-3000:]

    whole_batches = (tmp_path / "whole.jsonl").read_text().splitlines()
    resumed_batches = (tmp_path / "resumed.jsonl").read_text().splitlines()
    # accelerate's loader reads one batch ahead, so 8 steps build 9 batches; the resumed run builds the last 6.
    assert len(whole_batches) == 9 and resumed_batches == whole_batches[3:]  # data order resumed, not restarted
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "crash" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    assert worst <= 1e-6, f"resumed weights differ by {worst}"  # stated tolerance: 1e-6 (CPU, same threads)
    loss_whole = [h["loss"] for h in json.loads((tmp_path / "whole" / "trainer_state.json").read_text())["log_history"]
                  if "loss" in h]
    loss_resumed = [h["loss"] for h in json.loads((tmp_path / "crash" / "trainer_state.json").read_text())["log_history"]
                    if "loss" in h]
    assert loss_resumed == loss_whole  # per-step losses of steps 1-3 (restored) and 4-8 (re-run) agree


ITC_GRADIENT_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from tag2text.training.losses import image_text_contrastive_loss
    rank, out = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    sizes = [4, 2]  # uneven batches, as when a process skipped unreadable images
    start = sum(sizes[:rank])
    local_images = images[start:start + sizes[rank]].clone().requires_grad_(True)
    local_texts = texts[start:start + sizes[rank]].clone().requires_grad_(True)
    result = image_text_contrastive_loss(local_images, local_texts, torch.tensor(0.1))
    result.loss.backward()
    torch.save({"loss": result.loss.detach(), "image_grad": local_images.grad, "text_grad": local_texts.grad,
                "global": result.global_batch_size}, out)
    dist.destroy_process_group()
    """
)


def test_itc_gathers_with_gradients_across_processes(tmp_path):
    """Averaged over processes (as DDP averages gradients), the per-process ITC losses and their gradients equal
    those of one process holding the whole batch."""
    script = tmp_path / "itc.py"
    script.write_text(ITC_GRADIENT_SCRIPT)
    env = support.subprocess_env()
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    procs = [subprocess.Popen([support.PYTHON, str(script), str(r), str(tmp_path / f"r{r}.pt")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    parts = [torch.load(tmp_path / f"r{r}.pt") for r in range(2)]
    assert parts[0]["global"] == parts[1]["global"] == 6

    from tag2text.training.losses import image_text_contrastive_loss

    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1).requires_grad_(True)
    texts = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1).requires_grad_(True)
    # Each process's loss is a mean over its own rows; their batch-weighted mean is the global-batch loss.
    reference = image_text_contrastive_loss(images, texts, torch.tensor(0.1))
    weighted = (4 * parts[0]["loss"] + 2 * parts[1]["loss"]) / 6
    torch.testing.assert_close(weighted, reference.loss.detach())
    # Every process backpropagates its own loss; all_gather's backward hands each process the gradient that
    # both losses put on its rows: d(loss_0 + loss_1)/d(rows), with loss_r over rows r against all 6.
    got_images = torch.cat([parts[0]["image_grad"], parts[1]["image_grad"]])
    got_texts = torch.cat([parts[0]["text_grad"], parts[1]["text_grad"]])
    ref_images = torch.autograd.grad(_row_loss(images, texts, 0, 4) + _row_loss(images, texts, 4, 6), images)[0]
    torch.testing.assert_close(got_images, ref_images, rtol=1e-5, atol=1e-6)
    ref_texts = torch.autograd.grad(_row_loss(images, texts, 0, 4) + _row_loss(images, texts, 4, 6), texts)[0]
    torch.testing.assert_close(got_texts, ref_texts, rtol=1e-5, atol=1e-6)


def _row_loss(images, texts, start, stop):
    """ITC loss of rows start:stop against the whole batch, written out directly."""
    sim = images[start:stop] @ texts.T / 0.1
    sim_t = texts[start:stop] @ images.T / 0.1
    targets = torch.arange(start, stop)
    return (torch.nn.functional.cross_entropy(sim, targets) + torch.nn.functional.cross_entropy(sim_t, targets)) / 2


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate", "torchrun+checkpointing"])
def test_two_gloo_processes_train_together_on_the_global_itc_batch(data, tmp_path, launcher):
    """DDP with the Trainer's own defaults: find_unused_parameters on, or off under (non-reentrant, the
    transformers default) activation checkpointing, where every parameter must get a gradient each step."""
    out = tmp_path / "ddp"
    argv = _train_argv(data, out, "--max-steps", "3", "--logging-steps", "1", "--save-strategy", "no",
                       "--ddp-backend", "gloo", "--no-augment")
    if launcher.endswith("+checkpointing"):
        argv.append("--activation-checkpointing")
    if launcher.startswith("torchrun"):
        command = [support.PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(_free_port()), "-m", "tag2text.hub.cli", *argv]
    else:
        # `--multi_gpu` is accelerate's torchrun-style launcher; the processes run on the CPU with gloo
        # (`--cpu --num_processes 2` would silently start one process).
        command = [support.PYTHON, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(_free_port()), "-m", "tag2text.hub.cli", *argv]
    result = subprocess.run(command, env=support.subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["samples_per_process"] == [12, 12]  # both processes trained: 3 steps x 4 samples each
    assert summary["itc_global_batch_size"] == 8  # each contrasted its 4 pairs against both processes' 8
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["itc_global_batch"] for h in history if "loss" in h] == [8, 8, 8]


def test_quickstart_shortened_run_writes_the_report(tmp_path):
    out = tmp_path / "qs"
    code = cli_main(["quickstart", "--output-dir", str(out), "--train-images", "24", "--val-images", "8",
                     "--test-images", "10", "--max-steps", "3", "--batch-size", "8", "--num-beams", "1"])
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    metrics = report["metrics"]
    for key in ("tag_mAP", "tag_OF1", "caption_names_objects_and_colours", "t2i_r1_complete_caption",
                "retrieval_img_r1", "caption_CIDEr"):
        assert key in metrics, key
    assert metrics["retrieval_candidates"] == 10 and report["steps"] == 3
    assert {Path(p).name for p in report["plots"]} >= {"loss_tag.png", "loss_lm.png", "loss_itc.png", "loss_itm.png"}
    assert all(Path(p).stat().st_size > 1000 for p in report["plots"])
    assert (out / "contact_sheet.png").stat().st_size > 1000
    assert (out / "model" / "model.safetensors").is_file()
    assert os.path.isdir(out / "data" / "train")
