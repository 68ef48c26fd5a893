"""tag2text convert for RAM and RAM++: the model is recognised from the checkpoint's keys, the directory is complete
(weights, tags, Chinese names, thresholds, image processor, remote code, card) and loads through
AutoModelForImageClassification with the package and with trust_remote_code in a clean interpreter, the
image-classification pipeline gives every tag's probability, bad inputs are one line with exit status 2 and nothing
written, and the released full-size layouts (random weights) convert with a strict load."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from tag2text import RamConfig, RamForImageTagging, RamPlusConfig, RamPlusForImageTagging
from tag2text.hub.checkpoint_mapping import expected_shapes, load_converted_state_dict
from tag2text.hub.cli import main as cli_main
from tag2text.hub.ram_checkpoint_mapping import convert_ram_state_dict, detect_family
from tag2text.version_compat import swin_block_parameter_names

FIXTURE = Path(__file__).parent / "fixtures" / "ram_tiny"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text(encoding="utf-8"))
FILES = {"--vision-config": "swin_config.json", "--med-config": "med_config.json", "--q2l-config": "q2l_config.json",
         "--tag-list": "tag_list.txt", "--tag-list-chinese": "tag_list_chinese.txt"}


def convert_arguments(family, out, **replace):
    files = dict(FILES, **{"--checkpoint": f"{family}_state_dict.safetensors",
                           "--threshold-file": f"{family}_tag_list_threshold.txt"})
    arguments = ["--log-level", "WARNING", "convert", "--output-dir", str(out)]
    for option, name in files.items():
        value = replace.get(option, FIXTURE / name)
        if value is not None:
            arguments += [option, str(value)]
    return arguments


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    directories = {}
    for family in ("ram", "ram_plus"):
        out = tmp_path_factory.mktemp(family) / "model"
        assert cli_main(convert_arguments(family, out)) == 0
        directories[family] = out
    return directories


@pytest.fixture(scope="module")
def pixel_values():
    return load_file(FIXTURE / "golden.safetensors")["pixel_values"].float()


@pytest.mark.parametrize("family", ["ram", "ram_plus"])
def test_the_directory_is_complete_and_loads(converted, family, pixel_values):
    out = converted[family]
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "configuration_ram.py",
            "modeling_ram.py", "modeling_tag2text_text.py", "version_compat.py"} <= files
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    names = (FIXTURE / "tag_list.txt").read_text(encoding="utf-8").splitlines()
    chinese = (FIXTURE / "tag_list_chinese.txt").read_text(encoding="utf-8").splitlines()
    thresholds = [float(x) for x in (FIXTURE / f"{family}_tag_list_threshold.txt").read_text().splitlines()]
    assert config["model_type"] == family and config["problem_type"] == "multi_label_classification"
    assert [config["id2label"][str(i)] for i in range(30)] == names
    assert config["tag_names_chinese"] == chinese and config["class_thresholds"] == thresholds
    model_class = "RamForImageTagging" if family == "ram" else "RamPlusForImageTagging"
    assert config["auto_map"]["AutoModelForImageClassification"] == f"modeling_ram.{model_class}"
    assert config["auto_map"]["AutoImageProcessor"] == "image_processing_tag2text.Tag2TextImageProcessor"
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert "auto_map" not in processor  # see modeling_ram.image_processor_config_without_auto_map
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["size"] in (224, {"height": 224, "width": 224})
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: image-classification" in card and f"`{family}_state_dict.safetensors`" in card

    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert type(model).__name__ == model_class
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    reference = load_file(FIXTURE / "golden.safetensors")[f"{family}_logits_batch"]
    assert (logits - reference).abs().max() < 1e-4
    assert [" | ".join(t.tags_zh) for t in model.tag(pixel_values)] == GOLDEN[family]["closed_set"]["batch"]["chinese"]
    if family == "ram":  # the tag encoder and text decoder are kept for a caption path
        state = load_file(out / "model.safetensors")
        assert "text_decoder.bert.encoder.layer.1.crossattention.self.key.weight" in state
        assert "text_encoder.encoder.layer.1.attention.self.query.weight" in state
        decoder = model.text_decoder
        assert decoder.cls.predictions.decoder.weight is decoder.bert.embeddings.word_embeddings.weight


def test_labels_give_the_asymmetric_loss_and_gradients(converted, pixel_values):
    from tag2text import asymmetric_loss

    model = AutoModelForImageClassification.from_pretrained(converted["ram_plus"]).train()
    labels = torch.zeros(2, 30)
    labels[0, [2, 5]] = labels[1, [6]] = 1
    output = model(pixel_values=pixel_values, labels=labels)
    assert torch.allclose(output.loss, asymmetric_loss(output.logits, labels))
    output.loss.backward()
    assert model.fc.weight.grad.abs().sum() > 0 and model.reweight_scale.grad is not None
    assert model.tagging_head.encoder.layer[0].crossattention.self.key.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 30\)"):
        model(pixel_values=pixel_values, labels=labels[:, :29])


def test_the_released_configuration_is_the_default():
    from tag2text.hub.ram_original_config import ram_config_from_original

    names = [f"t{i}" for i in range(4585)]
    for family, default in (("ram", RamConfig()), ("ram_plus", RamPlusConfig())):
        converted = ram_config_from_original(family, names, descriptions_per_tag=51)
        assert converted.vision_config.to_diff_dict() == default.vision_config.to_diff_dict()
        for part in ("tagging_config", "text_config"):
            ours, theirs = getattr(converted, part), getattr(default, part)
            if theirs is None:
                assert ours is None
                continue
            for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                        "hidden_act", "layer_norm_eps", "max_position_embeddings", "encoder_hidden_size"):
                if part == "tagging_config" and key == "vocab_size":
                    continue  # the head has no embeddings
                assert getattr(ours, key) == getattr(theirs, key), (family, part, key)
        assert expected_shapes(converted, RamForImageTagging if family == "ram" else RamPlusForImageTagging) == \
            expected_shapes(default, RamForImageTagging if family == "ram" else RamPlusForImageTagging)


def test_a_tokenizer_is_checked_against_the_med_config_and_kept(tmp_path, capsys):
    out = tmp_path / "with_tokenizer"
    arguments = convert_arguments("ram", out) + ["--tokenizer", str(FIXTURE / "vocab.txt")]
    assert cli_main(arguments) == 0
    config = json.loads((out / "config.json").read_text())["text_config"]
    assert (config["bos_token_id"], config["enc_token_id"], config["vocab_size"]) == (129, 130, 131)  # [DEC], [ENC]
    assert (out / "tokenizer_config.json").is_file()
    short = tmp_path / "vocab.txt"
    short.write_text("\n".join((FIXTURE / "vocab.txt").read_text().splitlines()[:120]) + "\n")
    capsys.readouterr()
    status = cli_main(convert_arguments("ram", tmp_path / "out") + ["--tokenizer", str(short)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "vocab_size=131" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_without_a_tag_list_offline_the_download_is_named(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "out"
    status = cli_main(convert_arguments("ram", out, **{"--tag-list": None, "--tag-list-chinese": None,
                                                        "--threshold-file": None}))
    err = capsys.readouterr().err
    assert status == 1 and "ram_tag_list.txt" in err and "--tag-list" in err
    assert not out.exists()


def test_the_pipeline_gives_every_tags_probability(converted, monkeypatch):
    out = converted["ram_plus"]
    asked = []
    # transformers asks on the terminal before it runs a directory's code; with the package installed it must not.
    monkeypatch.setattr("builtins.input", lambda *args: asked.append(args) or "n")
    image = Image.open(FIXTURE / "image0.png")
    # transformers 5 reads top_k=None as its default of 5: every tag needs top_k=num_labels.
    classifier = pipeline("image-classification", model=str(out), function_to_apply="sigmoid", top_k=30)
    scores = {row["label"]: row["score"] for row in classifier(image)}
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    with torch.no_grad():
        probs = torch.sigmoid(model(**processor(images=image, return_tensors="pt")).logits)[0]
    assert len(scores) == 30 and asked == []
    assert max(abs(scores[name] - float(probs[i])) for i, name in model.config.id2label.items()) < 1e-6
    # The processor's pixels equal the stored float16 inputs to float16 rounding: the tags are the original's.
    fired = {name for name, score in scores.items()
             if score > model.config.class_thresholds[model.config.label2id[name]]}
    assert fired == set(GOLDEN["ram_plus"]["closed_set"]["img0"]["english"][0].split(" | "))


CLEAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    assert "tag2text" not in sys.modules
    try:
        import tag2text  # noqa: F401
        raise SystemExit("tag2text must not be importable here")
    except ImportError:
        pass
    from safetensors.torch import load_file
    from transformers import AutoImageProcessor, AutoModelForImageClassification
    directory, golden = sys.argv[1], sys.argv[2]
    model = AutoModelForImageClassification.from_pretrained(directory, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(directory, trust_remote_code=True)
    with torch.no_grad():
        logits = model(pixel_values=load_file(golden)["pixel_values"].float()).logits
    print(json.dumps({"classes": [type(model).__name__, type(processor).__name__], "module": type(model).__module__,
                      "logits": logits.tolist()}))
    """
)


@pytest.mark.parametrize("family", ["ram", "ram_plus"])
def test_remote_code_in_a_clean_interpreter(converted, family, tmp_path):
    script = tmp_path / "clean.py"
    script.write_text(CLEAN_SCRIPT)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    site = [p for p in sys.path if p.endswith("site-packages")]
    golden = FIXTURE / "golden.safetensors"
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p] + %r;"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()"
        " and 'editable' not in getattr(f, '__name__', '').lower()];"
        "sys.argv = [%r, %r, %r]; exec(open(%r).read())"
    ) % (site, str(script), str(converted[family]), str(golden), str(script))
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    model_class = "RamForImageTagging" if family == "ram" else "RamPlusForImageTagging"
    assert report["classes"] == [model_class, "Tag2TextImageProcessor"]
    assert report["module"].startswith("transformers_modules")
    reference = load_file(golden)[f"{family}_logits_batch"]
    assert (torch.tensor(report["logits"]) - reference).abs().max() < 1e-4


@pytest.mark.parametrize("family", ["ram", "ram_plus"])
def test_each_entry_module_of_the_payload_imports_its_closure_directly(converted, family):
    """transformers 5.0 copies only an entry module's direct relative imports into the remote-code cache."""
    from transformers.dynamic_module_utils import get_relative_import_files, get_relative_imports

    out = converted[family]
    config = json.loads((out / "config.json").read_text())
    entries = {ref.split(".")[0] + ".py" for ref in config["auto_map"].values()}
    assert entries == {"configuration_ram.py", "modeling_ram.py", "image_processing_tag2text.py"}
    for entry in entries:
        direct = {name + ".py" for name in get_relative_imports(str(out / entry))}
        closure = {os.path.basename(name) for name in get_relative_import_files(str(out / entry))} - {entry}
        assert closure <= direct, f"{entry} needs {sorted(closure - direct)} only through other siblings"
        assert closure <= set(os.listdir(out)) and "version_compat.py" in direct


# -- bad input ---------------------------------------------------------------------------------------------------


def _bad(tmp_path, capsys, family, **replace):
    out = tmp_path / "out"
    status = cli_main(convert_arguments(family, out, **replace))
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith("tag2text convert: error:"), err
    assert not out.exists()
    return err


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys):
    unknown = tmp_path / "unknown.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(unknown))
    assert "not a Tag2Text, RAM or RAM++ checkpoint" in _bad(tmp_path, capsys, "ram", **{"--checkpoint": unknown})

    truncated = tmp_path / "truncated.pth"
    torch.save({"model": load_file(FIXTURE / "ram_state_dict.safetensors")}, truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    assert "truncated.pth" in _bad(tmp_path, capsys, "ram", **{"--checkpoint": truncated})

    text = tmp_path / "notes.pth"  # not a PyTorch file at all: the unpickler fails on noise (a KeyError here)
    text.write_text("junk\n")
    assert "notes.pth is not a readable PyTorch file" in _bad(tmp_path, capsys, "ram", **{"--checkpoint": text})

    short = tmp_path / "short_tags.txt"
    short.write_text("\n".join((FIXTURE / "tag_list.txt").read_text().splitlines()[:29]))
    err = _bad(tmp_path, capsys, "ram", **{"--tag-list": short})
    assert "29 tags" in err and "30 classes" in err
    err = _bad(tmp_path, capsys, "ram_plus", **{"--tag-list": short})
    assert "29 tags" in err and "150 description embeddings" in err

    thresholds = tmp_path / "thresholds.txt"
    lines = (FIXTURE / "ram_tag_list_threshold.txt").read_text().splitlines()
    thresholds.write_text("\n".join(lines[:6] + ["0.6x"] + lines[7:]))
    err = _bad(tmp_path, capsys, "ram", **{"--threshold-file": thresholds})
    assert "thresholds.txt, line 7" in err and "0.6x" in err
    thresholds.write_text("\n".join(lines[:29]))
    assert "29 lines for 30 tags" in _bad(tmp_path, capsys, "ram_plus", **{"--threshold-file": thresholds})

    chinese = tmp_path / "chinese.txt"
    chinese.write_text("\n".join((FIXTURE / "tag_list_chinese.txt").read_text(encoding="utf-8").splitlines()[:3]),
                       encoding="utf-8")
    assert "3 names for 30 tags" in _bad(tmp_path, capsys, "ram", **{"--tag-list-chinese": chinese})


def test_the_tied_decoder_bias_is_compared_element_for_element(tmp_path, capsys):
    """RAM stores the text decoder's output bias twice (tied); a copy that differs is refused, one equal to it
    (NaN where it is NaN) converts into the single bias this model keeps."""
    state = load_file(FIXTURE / "ram_state_dict.safetensors")
    differs = dict(state)
    differs["text_decoder.cls.predictions.decoder.bias"] = state["text_decoder.cls.predictions.bias"] + 1e-3
    checkpoint = tmp_path / "differs.safetensors"
    save_file(differs, str(checkpoint))
    assert "differs from text_decoder.cls.predictions.bias" in _bad(tmp_path, capsys, "ram",
                                                                     **{"--checkpoint": checkpoint})
    with_nan = dict(state)
    bias = state["text_decoder.cls.predictions.bias"].clone()
    bias[3] = float("nan")
    with_nan["text_decoder.cls.predictions.bias"] = bias
    with_nan["text_decoder.cls.predictions.decoder.bias"] = bias.clone()
    checkpoint = tmp_path / "nan.safetensors"
    save_file(with_nan, str(checkpoint))
    out = tmp_path / "nan_model"
    assert cli_main(convert_arguments("ram", out, **{"--checkpoint": checkpoint})) == 0
    converted = load_file(out / "model.safetensors")["text_decoder.cls.predictions.bias"]
    assert torch.isnan(converted[3]) and torch.equal(converted[:3], bias[:3])


def test_a_pickled_checkpoint_with_optimizer_state_converts(tmp_path, capsys):
    """The released files are {'model': ..., 'optimizer': ..., ...} pickles: only the model weights are read."""
    state = load_file(FIXTURE / "ram_plus_state_dict.safetensors")
    released = {("vision_multi." + k[len("tagging_head."):] if k.startswith("tagging_head.") else k): v
                for k, v in state.items()}
    checkpoint = tmp_path / "ram_plus_swin_large_14m.pth"
    torch.save({"model": released, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": []},
                "epoch": 4}, checkpoint)
    out = tmp_path / "out"
    assert cli_main(convert_arguments("ram_plus", out, **{"--checkpoint": checkpoint})) == 0
    assert "RAM++" in capsys.readouterr().out
    model = AutoModelForImageClassification.from_pretrained(out)
    assert torch.equal(model.tagging_head.encoder.layer[1].output.dense.weight,
                       state["tagging_head.encoder.layer.1.output.dense.weight"])


# -- full size ---------------------------------------------------------------------------------------------------

# SHA-256 of the sorted "key<TAB>shape" lines of the original models' state dicts, built at the released size by
# the original code (RAM 1,042 entries, RAM++ 402): the listings made below from our models must reproduce them.
FULL_SIZE_LISTING_SHA256 = {
    "ram": (1042, "aa474302b0d606887343d79cdde2c84066b07861f4d30cdc555ce1308d15ac44"),
    "ram_plus": (402, "f1b27878c644bb305407dc70b5e52fbfd26eedbe8dffccbe60ff9e43adff9a19"),
}


def original_listing(config, model_class) -> dict:
    """The original's key -> shape at ``config``'s size, made from our model (on the meta device) by inverting
    the conversion's renames: q/k/v joined into qkv, the buffers the original stores added, the tied tagging
    head and decoder bias named again."""
    names = swin_block_parameter_names()
    inverse = {v: k for k, v in {"attn.proj": names["attention_output"], "mlp.fc1": names["mlp_in"],
                                 "mlp.fc2": names["mlp_out"], "norm1": "layernorm_before",
                                 "norm2": "layernorm_after"}.items()}
    ours = expected_shapes(config, model_class)
    listing = {}
    vision = config.vision_config
    for key, shape in ours.items():
        if key.startswith("vision_model."):
            sub = key[len("vision_model."):]
            sub = sub.replace("embeddings.patch_embeddings.projection", "patch_embed.proj")
            sub = sub.replace("embeddings.norm", "patch_embed.norm").replace("encoder.layers.", "layers.")
            if sub.startswith("layernorm."):
                sub = "norm." + sub.split(".")[-1]
            if sub.endswith("relative_position_index"):
                continue
            if names["relative_position_bias_table"] in sub:
                sub = sub.replace(names["relative_position_bias_table"], "attn.relative_position_bias_table")
            for ours_name, original_name in inverse.items():
                sub = sub.replace("." + ours_name + ".", "." + original_name + ".")
            for role in ("query", "key", "value"):
                if "." + names[role] + "." in sub:
                    if role != "query":
                        break
                    sub = sub.replace(names[role], "attn.qkv")
                    shape = (3 * shape[0], *shape[1:])
            else:
                listing["visual_encoder." + sub] = shape
            continue
        if key.startswith("text_encoder."):
            listing["tag_encoder." + key[len("text_encoder."):]] = shape
            layer = key.split(".")
            if (layer[1:3] == ["encoder", "layer"] and int(layer[3]) < config.tagging_config.num_hidden_layers
                    and layer[4] != "attention"):
                listing["tagging_head." + key[len("text_encoder."):]] = shape
        else:
            listing[key] = shape
    window = vision.window_size
    for stage, depth in enumerate(vision.depths):
        side = vision.image_size // vision.patch_size // 2 ** stage
        for block in range(depth):
            listing[f"visual_encoder.layers.{stage}.blocks.{block}.attn.relative_position_index"] = (window ** 2,) * 2
            if block % 2 and side > window:
                listing[f"visual_encoder.layers.{stage}.blocks.{block}.attn_mask"] = (
                    (side // window) ** 2, window ** 2, window ** 2)
    if "tag_encoder.embeddings.word_embeddings.weight" in listing:
        listing["tag_encoder.embeddings.position_ids"] = (1, config.text_config.max_position_embeddings)
        listing["text_decoder.bert.embeddings.position_ids"] = (1, config.text_config.max_position_embeddings)
        listing["text_decoder.cls.predictions.decoder.bias"] = listing["text_decoder.cls.predictions.bias"]
    return listing


@pytest.mark.parametrize("family", ["ram", "ram_plus"])
def test_full_size_random_state_dict_converts_with_a_strict_load(family):
    config = RamConfig() if family == "ram" else RamPlusConfig()
    model_class = RamForImageTagging if family == "ram" else RamPlusForImageTagging
    listing = original_listing(config, model_class)
    text = "".join(f"{key}\t{tuple(shape)}\n" for key, shape in sorted(listing.items()))
    assert (len(listing), hashlib.sha256(text.encode()).hexdigest()) == FULL_SIZE_LISTING_SHA256[family]

    original, markers = {}, {}
    tied = {"text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
            "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias"}
    for index, key in enumerate(sorted(listing, key=lambda k: (k in tied or k.startswith("tagging_head."), k))):
        source = tied.get(key) or (key.replace("tagging_head.", "tag_encoder.") if family == "ram" and
                                   key.startswith("tagging_head.") else None)
        if source is not None:
            original[key] = original[source]  # tied in the original: one tensor under both names
            continue
        # torch.empty: untouched pages cost no memory; only each tensor's first element is written, as a marker.
        tensor = torch.empty(listing[key], dtype=torch.int64 if key.endswith(("_index", "position_ids")) else None)
        if tensor.numel():
            tensor.view(-1)[0] = index
        if key.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            for third, part in enumerate(tensor.chunk(3)):
                part.reshape(-1)[0] = index + third / 4
        original[key] = tensor
        markers[key] = float(index)
    assert detect_family(original) == family
    result = convert_ram_state_dict(original, expected_shapes(config, model_class), family)
    with torch.device("meta"):
        model = model_class(config)
    load_converted_state_dict(model, result, assign=True)
    state = model.state_dict()
    assert {k for k, v in state.items() if v.device.type == "meta"} == set(result.computed_keys)
    assert len(state) - len(result.computed_keys) == {"ram": 1068, "ram_plus": 463}[family]

    def first(key):
        return float(state[key].reshape(-1)[0])

    names = swin_block_parameter_names()
    qkv = markers["visual_encoder.layers.2.blocks.17.attn.qkv.weight"]
    block = "vision_model.encoder.layers.2.blocks.17."
    assert [first(block + names[n] + ".weight") for n in ("query", "key", "value")] == [qkv, qkv + 0.25, qkv + 0.5]
    assert first("label_embed") == markers["label_embed"]
    assert first("fc.weight") == markers["fc.weight"] and first("image_proj.bias") == markers["image_proj.bias"]
    if family == "ram":
        # The head's tensors are the tag encoder's first layers, taken from the tagging-head copy.
        assert first("text_encoder.encoder.layer.1.crossattention.self.key.weight") == markers[
            "tag_encoder.encoder.layer.1.crossattention.self.key.weight"]
        assert first("text_encoder.encoder.layer.11.output.dense.weight") == markers[
            "tag_encoder.encoder.layer.11.output.dense.weight"]
        assert model.text_decoder.cls.predictions.decoder.weight is model.text_decoder.bert.embeddings.word_embeddings.weight
        assert tuple(state["label_embed"].shape) == (4585, 512)
    else:
        assert first("reweight_scale") == markers["reweight_scale"]
        assert first("tagging_head.encoder.layer.1.crossattention.self.value.weight") == markers[
            "tagging_head.encoder.layer.1.crossattention.self.value.weight"]
        assert tuple(state["label_embed"].shape) == (4585 * 51, 512)
