import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
import tiny_factory
from PIL import Image, ImageOps
from serving_support import RunningServer, multipart, png_bytes, post_image, post_json, request

from tag2text.hub.cli import main


def _jpeg(image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **save)
    return buffer.getvalue()


def _png_claiming(width, height) -> bytes:
    """A valid 8x8 PNG whose header claims width x height (a decompression bomb's header, without the bomb)."""
    data = png_bytes(Image.new("L", (8, 8)))
    ihdr = bytearray(data[8 : 8 + 25])  # length, "IHDR", 13 bytes of data, CRC
    ihdr[8:16] = struct.pack(">II", width, height)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return data[:8] + bytes(ihdr) + data[33:]


GOOD = png_bytes(tiny_factory.draw_image(0))
_WHOLE_JPEG = _jpeg(tiny_factory.draw_image(1, size=(96, 80)))
TRUNCATED_JPEG = _WHOLE_JPEG[: len(_WHOLE_JPEG) * 2 // 3]  # the header is intact, the scan data is cut

# (name, how to send it, expected status, words the error must contain)
BAD_REQUESTS = [
    ("not an image", lambda u: post_image(u, b"this is not an image at all"), 400, "not a readable image"),
    ("truncated JPEG", lambda u: post_image(u, TRUNCATED_JPEG), 400, "image data is truncated or corrupt"),
    ("empty body", lambda u: request(u, b"", method="POST"), 400, "request body is empty"),
    ("empty image file", lambda u: post_image(u, b""), 400, "'image' is empty"),
    ("missing image field", lambda u: request(u, *multipart({"threshold": "0.5"}, {})), 400, "missing field 'image'"),
    ("image sent as text", lambda u: request(u, *multipart({"image": "cat.jpg"}, {})), 400, "must be a file"),
    ("over the pixel limit", lambda u: post_image(u, png_bytes(Image.new("RGB", (400, 300)))), 413,
     "400x300 = 120000 pixels, over the server's limit of 100000"),
    ("bomb header under PIL's limit", lambda u: post_image(u, _png_claiming(5000, 5000)), 413,
     "5000x5000 = 25000000 pixels"),
    ("bomb header over PIL's limit", lambda u: post_image(u, _png_claiming(30000, 30000)), 413, "decompression bomb"),
    ("unknown option", lambda u: post_image(u, GOOD, beams="2"), 400, "unknown field(s) 'beams'"),
    ("threshold above 1", lambda u: post_image(u, GOOD, threshold="1.5"), 400, "'threshold' must be between 0 and 1"),
    ("threshold below 0", lambda u: post_image(u, GOOD, threshold="-0.1"), 400, "'threshold' must be between 0 and 1"),
    ("threshold not a number", lambda u: post_image(u, GOOD, threshold="high"), 400, "'threshold' must be a number"),
    ("num_beams 0", lambda u: post_image(u, GOOD, num_beams="0"), 400, "'num_beams' must be between 1 and 16, got 0"),
    ("num_beams fractional", lambda u: post_image(u, GOOD, num_beams="2.5"), 400, "'num_beams' must be an integer"),
    ("max_new_tokens past the positions", lambda u: post_image(u, GOOD, max_new_tokens="1000"), 400,
     "'max_new_tokens' must be between 1 and"),
    ("option sent twice", lambda u: request(u, *multipart({"threshold": ["0.5", "0.6"]}, {"image": GOOD})), 400,
     "'threshold' was sent 2 times"),
    ("tags longer than the model reads", lambda u: post_image(u, GOOD, tags=" | ".join(["fire hydrant"] * 30)), 400,
     "field 'tags': tags are"),
    ("tag the tokenizer cannot spell", lambda u: post_image(u, GOOD, tags="dog | zebra"), 400,
     "field 'tags': the model's tokenizer spells 'zebra' as [UNK]"),
    ("JSON not JSON", lambda u: request(u, b"{image:", {"Content-Type": "application/json"}), 400, "not valid JSON"),
    ("JSON not an object", lambda u: post_json(u, ["x"]), 400, "must be an object"),
    ("JSON bad base64", lambda u: post_json(u, {"image": "***"}), 400, "'image' is not valid base64"),
    ("JSON missing image", lambda u: post_json(u, {"threshold": 0.5}), 400, "missing field 'image'"),
    ("JSON threshold boolean", lambda u: post_json(u, {"image": base64.b64encode(GOOD).decode(), "threshold": True}),
     400, "'threshold' must be a number"),
    ("JSON tags not strings", lambda u: post_json(u, {"image": base64.b64encode(GOOD).decode(), "tags": [1, 2]}),
     400, "'tags' must be a string"),
    ("unsupported content type", lambda u: request(u, b"abc", {"Content-Type": "text/plain"}), 415,
     "unsupported content type 'text/plain'"),
]


@pytest.fixture(scope="module")
def server(tokenizer, processor):
    model = tiny_factory.make_model(tiny_factory.make_config(tokenizer))
    with RunningServer(model, processor, max_image_pixels=100_000) as running:
        yield running


@pytest.mark.parametrize("name,send,status,words", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_request_is_a_4xx_naming_the_problem(server, name, send, status, words):
    code, answer = send(server.url + "/v1/caption")
    assert code == status, answer
    assert set(answer) == {"error"} and words in answer["error"], answer


def test_server_stays_up_after_bad_requests_and_tags_endpoint_checks_its_fields(server):
    for _, send, _, _ in BAD_REQUESTS[:6]:
        send(server.url + "/v1/caption")
    code, answer = post_image(server.url + "/v1/tags", GOOD, num_beams="2")
    assert code == 400 and "unknown field(s) 'num_beams'" in answer["error"]
    code, health = request(server.url + "/health")
    assert code == 200 and health["model_loaded"] and health["device"] == "cpu" and health["dtype"] == "float32"
    assert health["batching"]["failed_batches"] == 0
    code, answer = post_image(server.url + "/v1/caption", GOOD, num_beams="1", max_new_tokens="5")
    assert code == 200 and set(answer) == {"tags", "tag_scores", "caption"}


def _awkward_images(directory):
    """16-bit PNG, CMYK JPEG, palette PNG with transparency, EXIF-rotated JPEG: written to files."""
    paths = {}
    ramp = (np.arange(48 * 40, dtype=np.uint32).reshape(40, 48) * 34 % 65536).astype(np.uint16)
    sixteen = Image.fromarray(ramp)  # uint16: mode I;16
    paths["16-bit.png"] = sixteen
    paths["cmyk.jpg"] = tiny_factory.draw_image(3).convert("CMYK")
    palette = tiny_factory.draw_image(4).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    paths["palette.png"] = palette
    rotated = tiny_factory.draw_image(5, size=(48, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    written = {}
    for name, image in paths.items():
        written[name] = directory / name
        image.save(written[name])
    written["exif-rotated.jpg"] = directory / "exif-rotated.jpg"
    rotated.save(written["exif-rotated.jpg"], quality=95, exif=exif)
    assert Image.open(written["16-bit.png"]).mode in ("I;16", "I")
    assert Image.open(written["palette.png"]).mode == "P" and "transparency" in Image.open(written["palette.png"]).info
    return written


def test_awkward_image_formats_are_captioned_as_the_cli_captions_them(server, processor, tmp_path):
    files = _awkward_images(tmp_path)
    model_dir = tmp_path / "model"
    server.service.model.model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    output = tmp_path / "cli.jsonl"
    assert main(["caption", "--model", str(model_dir), *map(str, files.values()), "--num-beams", "1",
                 "--output", str(output)]) == 0
    cli = {json.loads(line)["image"]: json.loads(line) for line in output.read_text().splitlines()}
    for name, path in files.items():
        code, answer = post_image(server.url + "/v1/caption", path.read_bytes(), num_beams="1")
        assert code == 200, (name, answer)
        expected = dict(cli[str(path)])
        expected.pop("image")
        assert answer == expected, name
    # The same image as base64 JSON gets the same answer.
    encoded = base64.b64encode(files["cmyk.jpg"].read_bytes()).decode()
    code, answer = post_json(server.url + "/v1/caption", {"image": f"data:image/jpeg;base64,{encoded}", "num_beams": 1})
    assert code == 200 and answer == {k: v for k, v in cli[str(files["cmyk.jpg"])].items() if k != "image"}


def test_exif_orientation_is_applied(server, tmp_path):
    path = _awkward_images(tmp_path)["exif-rotated.jpg"]
    with Image.open(path) as opened:
        upright = ImageOps.exif_transpose(opened).convert("RGB")
        stored = opened.convert("RGB")
    assert upright.size == (32, 48)
    scores = {}
    for label, data in [("file", path.read_bytes()), ("upright", png_bytes(upright)), ("stored", png_bytes(stored))]:
        code, answer = post_image(server.url + "/v1/tags", data)
        assert code == 200, answer
        scores[label] = answer["tag_scores"]
    assert scores["file"] == scores["upright"]
    assert scores["file"] != scores["stored"]
