import base64
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest
import tiny_factory
from serving_support import png_bytes, post_json, request

from tag2text.hub import serve_command
from tag2text.hub.cli import build_parser, main
from tag2text.hub.cli_args import UsageError


def _args(*argv):
    return build_parser("serve").parse_args(["serve", *argv])


@pytest.mark.parametrize("option,value,words", [
    ("--max-batch-size", "0", "must be at least 1, got 0"),
    ("--batch-timeout-ms", "-5", "must be at least 0, got -5"),
    ("--max-image-pixels", "many", "expected an integer, got 'many'"),
    ("--port", "-1", "must be at least 0, got -1"),
    ("--device", "gpu", "expected cpu, cuda, cuda:N or mps, got 'gpu'"),
])
def test_bad_option_values_exit_2_naming_the_option(capsys, option, value, words):
    with pytest.raises(SystemExit) as raised:
        _args("--model", "m", option, value)
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert option in error and words in error


@pytest.mark.parametrize("argv,words", [
    (["--max-image-pixels", "999999999999"], "--max-image-pixels must be at most"),
    (["--port", "70000"], "--port must be at most 65535, got 70000"),
])
def test_usage_errors_from_run(argv, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        serve_command.run(_args("--model", "someone/model", *argv))


def test_missing_model_is_one_line_with_exit_2(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nope"), "--port", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"tag2text serve: error: --model {tmp_path / 'nope'}: no model directory at {tmp_path / 'nope'}"


def test_unusable_device_is_a_usage_error(tmp_path, model, processor):
    import torch

    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    wanted = f"cuda:{torch.cuda.device_count()}"  # one past the last device: never usable
    with pytest.raises(UsageError, match=re.escape(f"--device {wanted}")):
        serve_command.run(_args("--model", str(tmp_path / "model"), "--device", wanted, "--port", "0"))


def test_serve_command_starts_answers_and_stops_on_sigint(tmp_path, model, processor):
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen(
        [sys.executable, "-m", "tag2text.hub.cli", "serve", "--model", str(model_dir), "--port", "0",
         "--max-batch-size", "2", "--batch-timeout-ms", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    log = []
    try:
        url = None
        while url is None:
            line = lines.get(timeout=300)
            log.append(line)
            found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else None
        code, health = request(url + "/health")
        assert code == 200 and health["model"] == str(model_dir) and health["batching"]["max_batch_size"] == 2
        with urllib.request.urlopen(url + "/", timeout=60) as page:
            assert page.status == 200 and "gradio" in page.read().decode().lower()
        image = tiny_factory.draw_image(0)
        code, answer = post_json(url + "/v1/caption", {"image": base64.b64encode(png_bytes(image)).decode(),
                                                       "num_beams": 1, "max_new_tokens": 6})
        assert code == 200, answer
        pixel_values = processor(images=image)["pixel_values"]
        expected = processor.decode_captions(model.generate(pixel_values, num_beams=1, max_new_tokens=6))[0]
        assert answer["caption"] == expected and answer["tags"] == ["cat", "grass", "red"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    while not lines.empty():
        log.append(lines.get())
    assert status == 0, "".join(log)[-3000:]
    assert any("stopped after" in line and "'requests': 1" in line for line in log), "".join(log)[-3000:]

