"""Publishing to the Hub, tested offline against a loopback fake Hub.

The fake answers the Hub API calls huggingface_hub 2.4 makes for create_repo, create_branch and a commit
(preupload says "regular" for every file, so contents arrive base64-encoded in the commit request and no
LFS/xet transfer happens) and records what it received. This tests our client usage against the protocol
as huggingface_hub speaks it, not the real server. huggingface_hub reads HF_ENDPOINT at import time, so
every upload runs in a subprocess with the fake's address in its environment.
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import load_file

from tag2text.hub import ModelDirectoryError, check_model_directory, convert_checkpoint, push_model_directory
from tag2text.hub.model_card import card_for_directory, evaluation_from_directory

FIXTURE = Path(__file__).parent / "fixtures" / "original_tiny"
TOKEN = "hf_fakeTOKENfor0testing0only0123456789"


class FakeHub:
    """A loopback HTTP server that answers the upload calls and records requests and commits."""

    def __init__(self, forbidden_repos=(), downloads=None):
        self.requests = []  # (method, path, authorization header, json body or None)
        self.commits = []  # {"repo", "revision", "summary", "files": {path: bytes}}
        downloads = dict(downloads or {})  # URL path ("/spaces/owner/name/resolve/main/file") -> bytes
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, payload=None, headers=None):
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def record(self, body=None):
                hub.requests.append((self.command, self.path.split("?")[0], self.headers.get("Authorization"), body))

            def serve_file(self):
                content = downloads.get(self.path.split("?")[0])
                if content is None:
                    return self.reply(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.send_header("ETag", '"%s"' % hashlib.sha256(content).hexdigest())
                self.send_header("X-Repo-Commit", "1" * 40)
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(content)

            def do_HEAD(self):
                self.record()
                self.serve_file()

            def do_GET(self):
                self.record()
                self.serve_file()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                # Commit bodies (NDJSON with base64 files) are parsed below, not kept in the request log.
                self.record(None if "/commit/" in path or not raw else json.loads(raw))
                if path == "/api/repos/create":
                    body = json.loads(raw)
                    repo = f"{body.get('organization') or 'tester'}/{body['name']}"
                    if repo in forbidden_repos:
                        return self.reply(403, {"error": "You don't have the rights to create this model"})
                    return self.reply(200, {"url": f"{base}/{repo}", "name": repo, "id": repo})
                if path == "/api/validate-yaml":
                    return self.reply(200, {"errors": [], "warnings": []})
                if re.fullmatch(r"/api/models/.+/branch/.+", path):
                    return self.reply(200, {})
                if re.fullmatch(r"/api/models/.+/preupload/.+", path):
                    files = json.loads(raw)["files"]
                    return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                match = re.fullmatch(r"/api/models/(.+)/commit/(.+)", path)
                if match:
                    lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
                    header = next(line["value"] for line in lines if line["key"] == "header")
                    files = {line["value"]["path"]: base64.b64decode(line["value"]["content"])
                             for line in lines if line["key"] == "file"}
                    hub.commits.append({"repo": match.group(1), "revision": match.group(2),
                                        "summary": header.get("summary"), "files": files})
                    oid = f"{len(hub.commits):040x}"
                    return self.reply(200, {"commitUrl": f"{base}/{match.group(1)}/commit/{oid}", "commitOid": oid})
                self.reply(404, {"error": f"no route {path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        # server_close matters: a socket left open makes a waiting client hang instead of failing.
        self.server.shutdown()
        self.server.server_close()

    def calls(self):
        return [(method, path) for method, path, _, _ in self.requests if not path.startswith("/api/agent")]


def hub_environment(hub, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               TRANSFORMERS_OFFLINE="0", HF_HUB_OFFLINE="0", TOKENIZERS_PARALLELISM="false")
    return env


def run_cli(arguments, env, cwd):
    code = "import sys; from tag2text.hub.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *arguments], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("push_source") / "tag2text-tiny"
    convert_checkpoint(
        out,
        checkpoint=FIXTURE / "original_state_dict.safetensors",
        tag_list=FIXTURE / "tag_list.txt",
        vision_config=FIXTURE / "swin_config.json",
        med_config=FIXTURE / "med_config.json",
        q2l_config=FIXTURE / "q2l_config.json",
        tokenizer=FIXTURE / "vocab.txt",
    )
    return out


def test_directory_check_names_what_is_missing(converted_dir, tmp_path):
    check_model_directory(converted_dir)
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "model.safetensors", "modeling_tag2text.py"):
        (partial / name).write_bytes((converted_dir / name).read_bytes())
    with pytest.raises(ModelDirectoryError) as error:
        push_model_directory(partial, "tester/never-created", token=TOKEN)
    message = str(error.value)
    for missing in ("configuration_tag2text.py", "modeling_tag2text_text.py", "pipeline_tag2text.py",
                    "processor_config.json", "tokenizer"):
        assert missing in message
    assert TOKEN not in message
    with pytest.raises(ModelDirectoryError, match="no config.json"):
        check_model_directory(tmp_path)


def test_push_command_uploads_the_directory_and_it_loads_with_remote_code(converted_dir, tmp_path):
    with FakeHub() as hub:
        result = run_cli(["push", "--model-dir", str(converted_dir), "--repo-id", "tester/tag2text-tiny", "--private",
                          "--revision", "dev", "--commit-message", "Tiny converted Tag2Text"],
                         hub_environment(hub, tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr
    assert "tester/tag2text-tiny" in result.stdout
    assert hub.calls() == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/models/tester/tag2text-tiny/branch/dev"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/models/tester/tag2text-tiny/preupload/dev"),
        ("POST", "/api/models/tester/tag2text-tiny/commit/dev"),
    ]
    create = hub.requests[[p for _, p, _, _ in hub.requests].index("/api/repos/create")]
    assert create[3]["visibility"] == "private" and create[3]["name"] == "tag2text-tiny"
    assert all(auth == f"Bearer {TOKEN}" for _, path, auth, _ in hub.requests if not path.startswith("/api/agent"))

    (commit,) = hub.commits
    assert commit["summary"] == "Tiny converted Tag2Text" and commit["revision"] == "dev"
    local = {p.name: p.read_bytes() for p in converted_dir.iterdir() if p.is_file()}
    assert commit["files"] == local
    assert all(TOKEN.encode() not in content for content in commit["files"].values())

    # The received bytes load where the tag2text package cannot be imported, through the remote code.
    received = tmp_path / "received"
    received.mkdir()
    for name, content in commit["files"].items():
        (received / name).write_bytes(content)
    report = load_in_clean_interpreter(received, tmp_path)
    golden = load_file(FIXTURE / "golden.safetensors")
    assert report["classes"] == ["Tag2TextForCaptioning", "Tag2TextProcessor"]
    assert report["module"].startswith("transformers_modules")
    assert report["greedy"] == golden["generated_ids_greedy_batch"].tolist()
    assert len(report["pipeline"]) == 1 and set(report["pipeline"][0]) == {"generated_text", "tags"}


CLEAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    try:
        import tag2text  # noqa: F401
        raise SystemExit("tag2text must not be importable here")
    except ImportError:
        pass
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
    directory, golden = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
    pixel_values = load_file(golden)["pixel_values"].float()
    with torch.no_grad():
        greedy = model.generate(pixel_values, num_beams=1, max_length=30, min_length=10)
    captioner = pipeline("image-to-text", model=directory, trust_remote_code=True)
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    print(json.dumps({
        "classes": [type(model).__name__, type(processor).__name__],
        "module": type(model).__module__,
        "greedy": greedy.tolist(),
        "pipeline": captioner(image, num_beams=1, max_new_tokens=4, min_new_tokens=4),
    }))
    """
)


def load_in_clean_interpreter(directory, tmp_path):
    script = tmp_path / "clean_load.py"
    script.write_text(CLEAN_SCRIPT)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf_clean"),
           "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # Isolated mode without the editable install's import hook, so only the downloaded remote code can serve.
    site = [p for p in sys.path if p.endswith("site-packages")]
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p] + %r;"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()"
        " and 'editable' not in getattr(f, '__name__', '').lower()];"
        "sys.argv = [%r, %r, %r]; exec(open(%r).read())"
    ) % (site, str(script), str(directory), str(FIXTURE / "golden.safetensors"), str(script))
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_convert_downloads_the_released_location_and_pushes(tmp_path):
    """Without --checkpoint the file comes from the Space the original README links; --push-to-hub uploads."""
    checkpoint = tmp_path / "released.pth"
    torch.save({"model": load_file(FIXTURE / "original_state_dict.safetensors"), "epoch": 4}, checkpoint)
    released = "/spaces/xinyu1205/Recognize_Anything-Tag2Text/resolve/main/tag2text_swin_14m.pth"
    out = tmp_path / "converted"
    with FakeHub(downloads={released: checkpoint.read_bytes()}) as hub:
        result = run_cli(["convert", "--output-dir", str(out), "--tag-list", str(FIXTURE / "tag_list.txt"),
                          "--tokenizer", str(FIXTURE / "vocab.txt"),
                          "--vision-config", str(FIXTURE / "swin_config.json"),
                          "--med-config", str(FIXTURE / "med_config.json"),
                          "--q2l-config", str(FIXTURE / "q2l_config.json"),
                          "--push-to-hub", "tester/converted"],
                         hub_environment(hub, tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr
    assert ("GET", released) in hub.calls()
    (commit,) = hub.commits
    assert commit["repo"] == "tester/converted"
    assert commit["files"] == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    card = commit["files"]["README.md"].decode()
    assert "tag2text_swin_14m.pth" in card and hashlib.sha256(checkpoint.read_bytes()).hexdigest() in card
    assert 'model="tester/converted"' in card


PUSH_TO_HUB_SCRIPT = textwrap.dedent(
    """
    import sys
    import tag2text  # noqa: F401
    from tag2text import Tag2TextForCaptioning, Tag2TextProcessor
    directory, token = sys.argv[1], sys.argv[2]
    Tag2TextForCaptioning.from_pretrained(directory).push_to_hub("tester/pushed", token=token)
    Tag2TextProcessor.from_pretrained(directory).push_to_hub("tester/pushed", token=token)
    print("done")
    """
)


def test_model_and_processor_push_to_hub(converted_dir, tmp_path):
    script = tmp_path / "push_to_hub.py"
    script.write_text(PUSH_TO_HUB_SCRIPT)
    with FakeHub() as hub:
        result = subprocess.run([sys.executable, str(script), str(converted_dir), TOKEN], capture_output=True,
                                text=True, env=hub_environment(hub, tmp_path), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr
    model_commit, processor_commit = hub.commits
    assert {"config.json", "model.safetensors", "generation_config.json", "configuration_tag2text.py",
            "modeling_tag2text.py", "modeling_tag2text_text.py", "pipeline_tag2text.py"} <= set(model_commit["files"])
    assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json", "processing_tag2text.py",
            "image_processing_tag2text.py"} <= set(processor_commit["files"])
    # The model class carries no publishing hooks: push_to_hub uploads transformers' own card; the Tag2Text card
    # comes with `tag2text push` / push_model_directory (test_push_command_uploads_the_directory_...).
    assert "automatically generated" in model_commit["files"]["README.md"].decode()
    config = json.loads(model_commit["files"]["config.json"])
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_tag2text.Tag2TextForCaptioning"
    pushed = safetensors_load(model_commit["files"]["model.safetensors"])
    saved = load_file(converted_dir / "model.safetensors")
    assert pushed.keys() == saved.keys() and all(torch.equal(pushed[k], saved[k]) for k in saved)


def test_refused_push_names_the_repo_and_step_and_keeps_the_token_secret(converted_dir, caplog, monkeypatch):
    # In-process with an explicit endpoint (the subprocess tests cover HF_ENDPOINT); the loopback server is
    # the only thing reached, so the suite's offline mode is lifted for this call.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub(forbidden_repos={"tester/forbidden"}) as hub:
        with pytest.raises(RuntimeError) as error:
            push_model_directory(converted_dir, "tester/forbidden", token=TOKEN, endpoint=hub.url)
    message = str(error.value)
    assert "tester/forbidden" in message and "create the repository" in message and "403" in message
    assert TOKEN not in message + caplog.text
    assert hub.commits == []
    with pytest.raises(ValueError, match="--repo-id"):
        push_model_directory(converted_dir, "a/b/c", token=TOKEN, endpoint=hub.url)


def test_model_card_for_a_trained_directory(converted_dir, tmp_path):
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.json").write_bytes((converted_dir / "config.json").read_bytes())
    (trained / "trainer_state.json").write_text("{}")
    (trained / "all_results.json").write_text(json.dumps(
        {"eval_cider": 1.234, "eval_tag_map": 0.5, "eval_runtime": 3.0, "train_loss": 2.0, "epoch": 1.0}))
    assert evaluation_from_directory(trained) == {"eval_cider": 1.234, "eval_tag_map": 0.5}
    card = card_for_directory(trained, repo_id="you/tag2text-finetuned")
    assert "| eval_cider | 1.2340 |" in card and "train_loss" not in card
    assert "Trained or fine-tuned" in card and 'model="you/tag2text-finetuned"' in card
    assert card.startswith("---\nlicense: apache-2.0\n")
