import io

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_factory
from tag2text import Tag2TextImageProcessor, Tag2TextProcessor
from tag2text.processing import ImageInputError

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _expected_pixels(image: Image.Image, size: int) -> np.ndarray:
    resized = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    return ((resized / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def test_released_preprocessing():
    processor = Tag2TextImageProcessor(size=24)
    image = tiny_factory.draw_image(3, size=(50, 30))
    out = processor(image, return_tensors="pt")["pixel_values"]
    assert out.shape == (1, 3, 24, 24) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), _expected_pixels(image, 24), atol=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK", "1", "I;16", "I", "F"])
def test_every_pil_mode_becomes_rgb(mode):
    processor = Tag2TextImageProcessor(size=16)
    base = tiny_factory.draw_image(1, size=(20, 20))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        expected = base.convert("L")
    elif mode == "I":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.int32) * 257)
        expected = base.convert("L")
    elif mode == "F":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.float32))
        expected = None
    else:
        image = base.convert(mode)
        expected = image.convert("RGB") if mode != "P" else image.convert("RGBA").convert("RGB")
    out = processor(image)["pixel_values"]
    assert out.shape == (1, 3, 16, 16) and np.isfinite(out).all()
    if expected is not None:
        np.testing.assert_allclose(out[0], _expected_pixels(expected, 16), atol=1e-5)
    if mode == "I;16":  # 16-bit values are scaled, not clipped to white
        assert out.min() < 0


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    loaded = Tag2TextImageProcessor(size=8).load_images(str(path))[0]
    assert loaded.size == (20, 40)
    top = np.asarray(loaded)[:10].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60  # the red half ends up on top


def test_paths_arrays_and_tensors(tmp_path):
    image = tiny_factory.draw_image(2, size=(30, 30))
    path = tmp_path / "a.png"
    image.save(path)
    processor = Tag2TextImageProcessor(size=16)
    reference = processor(image)["pixel_values"]
    array = np.asarray(image)
    for item in (str(path), path, array, array.transpose(2, 0, 1), array.astype(np.float32) / 255.0,
                 torch.from_numpy(array.copy())):
        np.testing.assert_allclose(processor(item)["pixel_values"], reference, atol=1e-5)
    assert processor([image, str(path)])["pixel_values"].shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    "item, message",
    [
        ("missing.jpg", r"image 0 \('.*missing.jpg'\): no such file"),
        (np.zeros((5, 5, 7), dtype=np.uint8), r"image 0 \(ndarray\): array of shape \(5, 5, 7\)"),
        (np.full((4, 4), np.nan, dtype=np.float32), "NaN"),
        (12, r"image 0 \(int\): expected a file path"),
    ],
)
def test_bad_inputs_name_the_input(item, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImageInputError, match=message):
        Tag2TextImageProcessor(size=8)(item)


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    processor = Tag2TextImageProcessor(size=8)
    with pytest.raises(ImageInputError, match=r"image 1 \('.*broken.jpg'\): not a readable image"):
        processor([tiny_factory.draw_image(0), str(path)])


def test_tokenizer_has_dec_and_enc(tokenizer):
    dec, enc = tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"])
    assert tokenizer.bos_token == "[DEC]" and dec == len(tokenizer) - 2 and enc == len(tokenizer) - 1
    assert tokenizer("[ENC] cat", add_special_tokens=False)["input_ids"][0] == enc


def test_captions_with_prompt_and_labels(processor, tokenizer):
    out = processor(text=["A red cat.", "a picture of two dogs"], return_labels=True)
    ids = out["input_ids"]
    words = tokenizer.convert_ids_to_tokens(ids[0])
    assert words[:8] == ["[DEC]", "a", "picture", "of", "a", "red", "cat", "."]
    assert words[8] == "[SEP]"
    assert tokenizer.convert_ids_to_tokens(ids[1])[:6] == ["[DEC]", "a", "picture", "of", "two", "dog"]
    labels = out["labels"]
    assert (labels[:, :4] == -100).all()
    assert (labels[out["attention_mask"] == 0] == -100).all()
    assert torch.equal(labels[0, 4:9], ids[0, 4:9])


def test_captions_are_truncated_to_the_limit(processor):
    out = processor(text=["cat " * 100])
    assert out["input_ids"].shape[1] == processor.max_text_length


def test_tags_are_encoded_with_enc_and_padded(processor, tokenizer):
    out = processor(tags=[["cat", "fire hydrant"], "dog | sky", []])
    ids = out["tag_input_ids"]
    assert ids.shape == (3, processor.max_tag_length)
    assert tokenizer.convert_ids_to_tokens(ids[0, :6]) == ["[ENC]", "cat", "|", "fire", "hydrant", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(ids[1, :5]) == ["[ENC]", "dog", "|", "sky", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(ids[2, :2]) == ["[ENC]", "[SEP]"]
    assert out["tag_attention_mask"][2].sum() == 2
    single = processor(images=tiny_factory.draw_image(0), tags=["cat", "dog"])
    assert single["tag_input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="got tags for 3 images but 1 images"):
        processor(images=tiny_factory.draw_image(0), tags=[["a"], ["b"], ["c"]])


def test_decode_strips_prompt_and_special_tokens(processor, tokenizer):
    ids = processor(text=["a red cat"])["input_ids"]
    assert processor.decode_captions(ids) == ["a red cat"]
    raw = tokenizer.convert_tokens_to_ids(["[DEC]", "dog", "on", "grass", "[SEP]", "[PAD]"])
    assert processor.decode_captions([raw]) == ["dog on grass"]


def test_processor_save_and_load(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    loaded = Tag2TextProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded.image_processor, Tag2TextImageProcessor)
    assert loaded.image_processor.size == processor.image_processor.size
    assert loaded.prompt == processor.prompt and loaded.max_tag_length == processor.max_tag_length
    sample = dict(images=[tiny_factory.draw_image(0)], text=["a cat"], tags=[["cat"]])
    for key, value in processor(**sample).items():
        assert torch.equal(value, loaded(**sample)[key])


def test_processor_needs_some_input(processor):
    with pytest.raises(ValueError, match="give at least one of images, text and tags"):
        processor()


def test_caption_options_take_effect_flat_or_as_text_kwargs(processor, tokenizer):
    texts = ["a cat", "a red dog on the grass"]
    padded = processor(text=texts, padding="max_length", max_length=12)
    assert padded["input_ids"].shape == (2, 12)
    nested = processor(text=texts, text_kwargs={"padding": "max_length", "max_length": 12})
    assert torch.equal(nested["input_ids"], padded["input_ids"])
    short = processor(text=texts, max_length=5)
    assert short["input_ids"].shape[1] == 5 and tokenizer.convert_ids_to_tokens(short["input_ids"][1])[-1] == "[SEP]"
    bare = processor(text=["a cat"], add_prompt=False, return_labels=True)
    assert tokenizer.convert_ids_to_tokens(bare["input_ids"][0]) == ["[DEC]", "a", "cat", "[SEP]"]
    labels = bare["labels"][0].tolist()
    assert labels[0] == -100 and labels[1:] == bare["input_ids"][0].tolist()[1:]
    assert "labels" not in processor(text=texts)
    # left padding: [DEC] takes the first real position and the labels skip the prompt after the padding
    left = processor(text=texts, padding_side="left", return_labels=True)
    row = left["input_ids"][0].tolist()
    first = left["attention_mask"][0].tolist().index(1)
    assert first > 0 and row[first] == processor.dec_token_id and row[0] == tokenizer.pad_token_id
    assert (left["labels"][0, : first + 4] == -100).all() and left["labels"][0, first + 4] == row[first + 4]


def test_image_options_take_effect(processor):
    image = tiny_factory.draw_image(3)
    small = processor(images=image, size=16)
    assert small["pixel_values"].shape == (1, 3, 16, 16)
    assert torch.equal(processor(images=image, images_kwargs={"size": 16})["pixel_values"], small["pixel_values"])
    raw = processor(images=image, do_normalize=False, size={"height": 8, "width": 12})["pixel_values"]
    # independent: PIL's bilinear resize scaled to [0, 1], channels first
    expected = np.asarray(image.resize((12, 8), resample=Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    np.testing.assert_allclose(raw[0].numpy(), expected.transpose(2, 0, 1), rtol=0, atol=1e-6)
    unscaled = processor(images=image, do_rescale=False, do_normalize=False, size=8)["pixel_values"]
    assert float(unscaled.max()) > 1.0
    halved = processor(images=image, rescale_factor=1 / 127.5, do_normalize=False, size=8)["pixel_values"]
    torch.testing.assert_close(halved, unscaled / 127.5)


def test_return_tensors_and_unknown_arguments(processor):
    out = processor(images=tiny_factory.draw_image(0), text=["a cat"], tags=[["cat"]], return_tensors="np")
    assert all(isinstance(value, np.ndarray) for value in out.values())
    lists = processor(text=["a cat"], return_tensors=None)
    assert isinstance(lists["input_ids"], list)
    with pytest.raises(TypeError, match="unexpected argument.*crop_size"):
        processor(images=tiny_factory.draw_image(0), crop_size=8)
    with pytest.raises(TypeError, match="text_kwargs got unexpected key.*stride"):
        processor(text=["a cat"], text_kwargs={"stride": 2})
    with pytest.raises(TypeError, match="unsupported argument"):
        processor.image_processor(tiny_factory.draw_image(0), crop_size=8)


def test_alignment_text_for_itc_and_itm(processor, tokenizer):
    out = processor.encode_alignment_text(["a red cat", "a dog"])
    assert tokenizer.convert_ids_to_tokens(out["text_input_ids"][0])[:5] == ["[CLS]", "a", "red", "cat", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(out["itm_input_ids"][1])[:4] == ["[ENC]", "a", "dog", "[SEP]"]
    assert torch.equal(out["text_input_ids"][:, 1:], out["itm_input_ids"][:, 1:])
    assert out["text_attention_mask"].tolist() == [[1] * 5, [1] * 4 + [0]]
