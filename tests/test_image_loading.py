"""One image conversion for every entry point (tag2text.image_loading).

Awkward files (16-bit PNG, CMYK JPEG, palette PNG with per-entry transparency, EXIF-rotated JPEG and TIFF) go
through the processor, the ONNX runtime's loader, the server's upload decoding, the training loader and the
annotation reader; each must give the pixels computed here independently (numpy on the decoded values, PIL's own
CMYK conversion, a numpy rotation), and failures must raise the one ImageInputError naming the input.
"""

import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import tiny_factory
from tag2text.hub.annotation_run import decode_image as annotation_decode
from tag2text.hub.serving_inputs import RequestError
from tag2text.hub.serving_inputs import decode_image as serving_decode
from tag2text.processing import ImageInputError, Tag2TextImageProcessor, to_rgb_image
from tag2text import image_loading
from tag2text.training.images import ImageLoader


def _base():
    """A 30x20 image whose pixels all differ (so rotations and flips are told apart)."""
    y, x = np.mgrid[0:20, 0:30]
    return np.stack([x * 8, y * 12, (x * 3 + y * 5) % 256], -1).astype(np.uint8)


def awkward_files(directory):
    """name -> (path, the RGB array it must become), the expectation computed without the code under test."""
    files = {}
    base = _base()

    ramp = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 109).astype(np.uint16)  # up to 65291
    Image.fromarray(ramp).save(directory / "16-bit.png")
    grey = np.rint(ramp / 257.0).astype(np.uint8)
    files["16-bit.png"] = np.repeat(grey[..., None], 3, axis=-1)

    Image.fromarray(base).convert("CMYK").save(directory / "cmyk.jpg", quality=95)
    with Image.open(directory / "cmyk.jpg") as opened:
        assert opened.mode == "CMYK"
        files["cmyk.jpg"] = np.asarray(opened.convert("RGB"))  # PIL's own CMYK conversion

    palette = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = bytes([0, 128] + [255] * 6)  # per-entry alpha: bytes, PIL's warning case
    palette.save(directory / "palette.png")
    with Image.open(directory / "palette.png") as opened:
        assert opened.mode == "P" and isinstance(opened.info["transparency"], bytes)
        lut = np.asarray(opened.getpalette(), np.uint8).reshape(-1, 3)
        files["palette.png"] = lut[np.asarray(opened)]  # the palette colours, alpha dropped

    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(base).save(directory / "rotated.jpg", quality=95, exif=exif)
    with Image.open(directory / "rotated.jpg") as opened:
        files["rotated.jpg"] = np.rot90(np.asarray(opened.convert("RGB")), k=-1)
    Image.fromarray(base).save(directory / "rotated.tif", exif=exif)  # orientation in the TIFF's own tags
    files["rotated.tif"] = np.rot90(base, k=-1)
    return {name: (directory / name, expected) for name, expected in files.items()}


@pytest.fixture
def files(tmp_path):
    return awkward_files(tmp_path)


def _same(image, expected, name):
    assert image.mode == "RGB", name
    np.testing.assert_array_equal(np.asarray(image), expected, err_msg=name)


def test_awkward_files_become_the_expected_rgb_pixels_from_paths_and_bytes(files):
    for name, (path, expected) in files.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the palette's bytes transparency must not warn
            _same(to_rgb_image(path), expected, name)
            _same(to_rgb_image(str(path)), expected, name)
            _same(to_rgb_image(path.read_bytes()), expected, name)
            _same(to_rgb_image(bytearray(path.read_bytes())), expected, name)
            with Image.open(path) as opened:
                _same(to_rgb_image(opened), expected, name)
        # converting a converted image again changes nothing (the orientation tag is gone)
        _same(to_rgb_image(to_rgb_image(path)), expected, name)


def test_every_entry_point_converts_the_same_way(files):
    processor = Tag2TextImageProcessor(size=16)
    loader = ImageLoader(fail_fast=True)
    for name, (path, expected) in files.items():
        data = path.read_bytes()
        _same(processor.load_images(str(path))[0], expected, name)
        _same(processor.load_images(data)[0], expected, name)
        _same(serving_decode(data, max_pixels=10_000), expected, name)
        _same(annotation_decode(str(path), None, max_pixels=10_000), expected, name)
        _same(annotation_decode(None, data, max_pixels=10_000), expected, name)
        _same(loader.load(str(path)), expected, name)
        _same(loader.load(data), expected, name)
        _same(loader.load({"bytes": data, "path": "ignored.png"}), expected, name)
        _same(loader.load({"bytes": None, "path": str(path)}), expected, name)
        reference = processor(images=str(path))["pixel_values"]
        assert np.array_equal(processor(images=data)["pixel_values"], reference), name
    assert loader.loaded == 4 * len(files)


def test_pixel_array_is_the_released_arithmetic():
    image = Image.fromarray(_base())
    resized = np.asarray(image.resize((12, 8), Image.Resampling.BILINEAR), dtype=np.float64)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((resized / 255.0 - mean) / std).transpose(2, 0, 1)
    ours = image_loading.pixel_array(image, 8, 12, "bilinear", 1 / 255, list(mean), list(std))
    assert ours.dtype == np.float32 and ours.shape == (3, 8, 12)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    raw = image_loading.pixel_array(image, 8, 12, "nearest", None, None, None)
    np.testing.assert_array_equal(raw, np.asarray(image.resize((12, 8), Image.Resampling.NEAREST)).transpose(2, 0, 1))
    with pytest.raises(ValueError, match="resample must be one of"):
        image_loading.pixel_array(image, 8, 12, "cubic")


def test_pixel_arrays_of_a_batch_equal_each_image_computed_alone_bit_for_bit():
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((20, 30), (8, 12), (50, 9))]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    batch = image_loading.pixel_arrays(images, 8, 12, "bilinear", 1 / 255, mean, std)
    assert batch.shape == (3, 3, 8, 12) and batch.dtype == np.float32 and batch.flags["C_CONTIGUOUS"]
    for image, ours in zip(images, batch):
        # The per-image float32 arithmetic, written out: resize, / 255, - mean, / std.
        alone = np.asarray(image.resize((12, 8), Image.Resampling.BILINEAR), dtype=np.float32) / np.float32(255.0)
        alone = (alone - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        np.testing.assert_array_equal(ours, alone.transpose(2, 0, 1))


@pytest.mark.parametrize("item, message", [
    (b"not an image at all", r"^image 0 \(19 bytes\): not a readable image \(no image format recognised\)$"),
    (b"\x89PNG\r\n\x1a\n garbage", r"^image 0 \(16 bytes\): not a readable image \(.+\)$"),  # PIL's reason
    (3.5, r"^image 0 \(float\): expected a file path, image bytes, a PIL image, a numpy array or a tensor$"),
    (np.zeros((0, 4, 3), np.uint8), r"^image 0 \(ndarray\): empty array$"),
])
def test_bad_inputs_raise_one_error_naming_the_input(item, message):
    with pytest.raises(ImageInputError, match=message):
        to_rgb_image(item)
    with pytest.raises(ImageInputError, match=message.replace("image 0", "image 1")):
        Tag2TextImageProcessor(size=8).load_images([tiny_factory.draw_image(0), item])


def test_a_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.fromarray(_base()).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(ImageInputError, match=r"^image 0 \('.*cut\.jpg'\): not a readable image \(") as caught:
        to_rgb_image(path)
    assert isinstance(caught.value, ValueError)
    loader = ImageLoader()
    assert loader.load(path.read_bytes(), name="cut.jpg") is None and loader.failures["corrupt"] == 1
    with pytest.raises(RequestError, match="field 'image'"):
        serving_decode(path.read_bytes(), max_pixels=10_000)


def test_one_error_class_for_the_processor_and_the_onnx_runtime():
    import tag2text.onnx
    import tag2text.image_processing_tag2text as processor_module

    assert ImageInputError is image_loading.ImageInputError is tag2text.onnx.ImageInputError
    assert processor_module.ImageInputError is ImageInputError and issubclass(ImageInputError, ValueError)
    assert to_rgb_image is image_loading.to_rgb_image is tag2text.onnx.to_rgb_image is processor_module.to_rgb_image


def test_the_onnx_runtime_and_the_image_conversion_import_neither_torch_nor_transformers():
    code = """
import json, sys
import tag2text.onnx
from tag2text.processing import ImageInputError, to_rgb_image
from tag2text.image_loading import pixel_array
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
