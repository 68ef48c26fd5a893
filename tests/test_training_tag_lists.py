"""Fine-tuning on a custom tag list (`--init-from MODEL --tag-list NEW`): tags in both lists keep their weights
and thresholds, new tags start from the word embeddings of their names, and the model keeps what it knew."""

import json

import torch

import training_scenes as scenes
import training_support as support
from tag2text.hub.cli import main as cli_main

OLD_TAGS = ["pink", "navy", "brown"]
NEW_TAGS = ["gold", "teal", "violet"]


def test_shared_tags_are_copied_exactly_and_new_queries_are_their_names_mean_word_embedding(tmp_path):
    from tag2text.training.model_setup import replace_tag_vocabulary, train_caption_wordpiece
    from tag2text import build_tokenizer

    names = ["pink", "navy", "gold", "block"]
    tokenizer = build_tokenizer(train_caption_wordpiece(["a pink block", "a navy frame", "a gold arrow", "a teal moon",
                                                         "a violet block"] * 3, tmp_path / "vocab.txt",
                                                        required=names + ["teal", "violet"]))
    model = support.tiny_model(tokenizer, names, seed=4)
    model.config.tag_thresholds = {2: 0.31}  # gold
    model.config.caption_excluded_tag_ids = [0]  # pink
    head = model.tagging_head
    before = {name: (head.label_embed.weight[i].clone(), head.classifier_weight[i].clone(),
                     head.classifier_bias[i].clone()) for i, name in enumerate(names)}

    new_names = ["gold", "teal", "pink", "violet block"]
    result = replace_tag_vocabulary(model, new_names, tokenizer)
    assert result == {"kept": ["gold", "pink"], "new": ["teal", "violet block"]}
    head = model.tagging_head
    for index, name in ((0, "gold"), (2, "pink")):
        query, weight, bias = before[name]
        assert torch.equal(head.label_embed.weight[index], query)
        assert torch.equal(head.classifier_weight[index], weight)
        assert torch.equal(head.classifier_bias[index], bias)
    assert model.config.tag_thresholds == {0: 0.31} and model.config.caption_excluded_tag_ids == [2]
    table = model.text_encoder.embeddings.word_embeddings.weight
    for index, name in ((1, "teal"), (3, "violet block")):
        pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(name))
        expected = torch.stack([table[i] for i in pieces]).sum(0) / len(pieces)
        torch.testing.assert_close(head.label_embed.weight[index], expected, rtol=0, atol=1e-6)
        bound = 1 / head.classifier_weight.shape[1] ** 0.5  # the head's standard initialisation
        assert head.classifier_weight[index].abs().max() <= bound and head.classifier_weight[index].std() > 0
    assert model.config.tag_names == new_names and head.label_embed.weight.shape[0] == 4
    # the config's tag token ids follow the new list
    assert model.config.tag_token_ids[3] == tokenizer("violet block", add_special_tokens=False)["input_ids"]


def _tagged_copy(source, target, keep):
    """The scenes of ``source`` with metadata "tags": their drawn colours that are in ``keep``."""
    target.mkdir(parents=True)
    lines = []
    for line in (source / "metadata.jsonl").read_text().splitlines():
        entry = json.loads(line)
        entry["tags"] = sorted({o["colour"] for o in entry["objects"]} & set(keep))
        lines.append(json.dumps(entry))
        (target / entry["file_name"]).symlink_to(source / entry["file_name"])
    (target / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return target


def test_fine_tuning_on_old_plus_new_tags_keeps_the_old_and_learns_the_new(tmp_path):
    scenes_dir = scenes.write_scenes(tmp_path / "scenes", 480, seed=31, image_size=32)
    test_dir = scenes.write_scenes(tmp_path / "test", 120, seed=32, image_size=32)
    old_list, both_list = tmp_path / "old.txt", tmp_path / "both.txt"
    old_list.write_text("\n".join(OLD_TAGS) + "\n")
    both_list.write_text("\n".join(OLD_TAGS + NEW_TAGS) + "\n")
    phase1 = _tagged_copy(scenes_dir, tmp_path / "phase1", OLD_TAGS)
    phase2 = _tagged_copy(scenes_dir, tmp_path / "phase2", OLD_TAGS + NEW_TAGS)
    common = ["--loss-weights", "tag=1,lm=0,itc=0,itm=0", "--disable-tqdm", "true", "--save-strategy", "no",
              "--seed", "5"]
    assert cli_main(["train", "--train-dir", str(phase1), "--output-dir", str(tmp_path / "a"), "--model-config",
                     "tiny", "--tag-list", str(old_list), "--max-steps", "150", *common]) == 0
    old_f1 = scenes.model_tag_f1(tmp_path / "a", test_dir, OLD_TAGS)["f1"]
    assert old_f1 > scenes.every_tag_f1(test_dir, OLD_TAGS) + 0.15  # phase 1 learned its colours

    assert cli_main(["train", "--train-dir", str(phase2), "--output-dir", str(tmp_path / "ab"), "--init-from",
                     str(tmp_path / "a"), "--tag-list", str(both_list), "--max-steps", "200", "--learning-rate",
                     "1e-3", "--per-device-train-batch-size", "32", *common]) == 0  # no augmentation: as phase 1 trained
    config = json.loads((tmp_path / "ab" / "config.json").read_text())
    assert config["tag_names"] == OLD_TAGS + NEW_TAGS
    kept_f1 = scenes.model_tag_f1(tmp_path / "ab", test_dir, OLD_TAGS)["f1"]
    new_f1 = scenes.model_tag_f1(tmp_path / "ab", test_dir, NEW_TAGS)["f1"]
    assert kept_f1 >= old_f1 - 0.05, (old_f1, kept_f1)
    assert new_f1 > scenes.every_tag_f1(test_dir, NEW_TAGS) + 0.1, new_f1  # and the new ones were learned
    print(f"old tags F1 {old_f1:.3f} -> {kept_f1:.3f} after fine-tuning; new tags F1 {new_f1:.3f}")
