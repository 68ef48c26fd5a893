"""A synthetic image set of the tests' own, unlike the quickstart's (tag2text.training.synthetic): other shapes
(block, frame, arrow, crescent, hourglass), other colours (pink, brown, navy, gold, teal, violet), a gradient
background, and other sentence forms ("a pink block beside a navy arrow", "a gold crescent below a teal
frame", "just a brown hourglass").

Every word a caption uses is a colour, a shape or a function word, so the tags that spaCy mines from the
captions are exactly the drawn colours and shapes (checked when the forms were chosen): the ground truth of
tagging is known without the miner.

Written in the ``tag2text train`` layout: a folder of PNG files with ``metadata.jsonl`` (``file_name``,
``captions``; ``objects`` keeps the drawn colour and shape of each object for the checks).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("block", "frame", "arrow", "crescent", "hourglass")
COLOURS = {
    "pink": (240, 110, 180),
    "brown": (125, 70, 25),
    "navy": (20, 30, 125),
    "gold": (235, 185, 20),
    "teal": (0, 150, 140),
    "violet": (150, 80, 235),
}
SINGLE_FORMS = ("a {a}", "just a {a}", "one {a}")
BESIDE_FORMS = ("a {a} beside a {b}", "a {a} and a {b}", "a {b} with a {a}")
ABOVE_FORMS = ("a {a} above a {b}", "a {b} below a {a}", "a {a} and a {b}")
_SUPERSAMPLE = 4


def _draw_object(draw: ImageDraw.ImageDraw, mask_size: int, shape: str, cx: float, cy: float, r: float, colour,
                 canvas: Image.Image) -> None:
    if shape == "block":
        draw.rectangle([cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r], fill=colour)
    elif shape == "frame":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(1, int(0.34 * r)))
    elif shape == "arrow":  # pointing right: a shaft and a head
        draw.rectangle([cx - r, cy - 0.22 * r, cx + 0.1 * r, cy + 0.22 * r], fill=colour)
        draw.polygon([(cx + 0.05 * r, cy - 0.7 * r), (cx + r, cy), (cx + 0.05 * r, cy + 0.7 * r)], fill=colour)
    elif shape == "hourglass":  # two triangles meeting at their tips
        draw.polygon([(cx - 0.75 * r, cy - r), (cx + 0.75 * r, cy - r), (cx, cy)], fill=colour)
        draw.polygon([(cx - 0.75 * r, cy + r), (cx + 0.75 * r, cy + r), (cx, cy)], fill=colour)
    elif shape == "crescent":  # a disc with a shifted disc cut out of it
        mask = Image.new("L", (mask_size, mask_size), 0)
        mask_draw = ImageDraw.Draw(mask)
        mask_draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        mask_draw.ellipse([cx - 0.35 * r, cy - 0.95 * r, cx + 1.45 * r, cy + 0.95 * r], fill=0)
        canvas.paste(Image.new("RGB", canvas.size, colour), (0, 0), mask)
    else:
        raise ValueError(shape)


def draw(objects: list[dict], size: int, rng: np.random.Generator) -> Image.Image:
    big = size * _SUPERSAMPLE
    top, bottom = rng.uniform(150, 205, size=3), rng.uniform(150, 205, size=3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    background = top[None, None, :] * (1 - ramp) + bottom[None, None, :] * ramp
    background = background + rng.normal(0.0, 5.0, size=(size, size, 3))
    canvas = Image.fromarray(np.clip(np.broadcast_to(background, (size, size, 3)), 0, 255).astype(np.uint8))
    canvas = canvas.resize((big, big), Image.Resampling.BILINEAR)
    pen = ImageDraw.Draw(canvas)
    for obj in objects:
        cx, cy = obj["centre"]
        r = obj["radius"] * big
        colour = tuple(int(np.clip(c + rng.integers(-10, 11), 0, 255)) for c in COLOURS[obj["colour"]])
        _draw_object(pen, big, obj["shape"], cx * big, cy * big, r, colour, canvas)
        pen = ImageDraw.Draw(canvas)
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def random_objects(rng: np.random.Generator) -> tuple[list[dict], str]:
    """1 or 2 objects (distinct colour-shape pairs) and their arrangement: "single", "beside" or "above"."""
    def pick():
        return str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))

    if rng.random() < 0.4:
        shape, colour = pick()
        centre = (0.5 + rng.uniform(-0.08, 0.08), 0.5 + rng.uniform(-0.08, 0.08))
        return [{"shape": shape, "colour": colour, "centre": centre, "radius": float(rng.uniform(0.2, 0.27))}], "single"
    first = pick()
    second = pick()
    while second == first:
        second = pick()
    arrangement = "beside" if rng.random() < 0.5 else "above"
    jitter = lambda: float(rng.uniform(-0.04, 0.04))  # noqa: E731
    if arrangement == "beside":
        centres = [(0.27 + jitter(), 0.5 + jitter()), (0.73 + jitter(), 0.5 + jitter())]
    else:
        centres = [(0.5 + jitter(), 0.27 + jitter()), (0.5 + jitter(), 0.73 + jitter())]
    objects = [{"shape": s, "colour": c, "centre": centre, "radius": float(rng.uniform(0.16, 0.2))}
               for (s, c), centre in zip((first, second), centres)]
    return objects, arrangement


def captions_for(objects: list[dict], arrangement: str, rng: np.random.Generator) -> list[str]:
    """Two captions in different sentence forms; the first-named object of "above" forms is the upper one."""
    names = [f"{o['colour']} {o['shape']}" for o in objects]
    forms = {"single": SINGLE_FORMS, "beside": BESIDE_FORMS, "above": ABOVE_FORMS}[arrangement]
    picks = rng.choice(len(forms), size=2, replace=False)
    return [forms[i].format(a=names[0], b=names[-1]) for i in picks]


def write_scenes(directory, num_images: int, seed: int, image_size: int = 64) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(num_images):
        objects, arrangement = random_objects(rng)
        image = draw(objects, image_size, rng)
        name = f"scene_{index:05d}.png"
        image.save(directory / name)
        lines.append(json.dumps({"file_name": name, "captions": captions_for(objects, arrangement, rng),
                                 "objects": [{"shape": o["shape"], "colour": o["colour"]} for o in objects]}))
    (directory / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def read_truth(directory) -> dict[str, list[dict]]:
    truth = {}
    for line in (Path(directory) / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            truth[entry["file_name"]] = entry["objects"]
    return truth


def truth_tags(objects: list[dict]) -> set[str]:
    return {o["shape"] for o in objects} | {o["colour"] for o in objects}


def caption_names_every_object(caption: str, objects: list[dict]) -> bool:
    """Each drawn object appears as "<colour> <shape>", and the caption names no other shape or colour."""
    words = caption.lower().replace(",", " ").split()
    pairs = {(a, b) for a, b in zip(words, words[1:]) if a in COLOURS and b in SHAPES}
    named_shapes = {w for w in words if w in SHAPES}
    named_colours = {w for w in words if w in COLOURS}
    drawn = {(o["colour"], o["shape"]) for o in objects}
    return drawn <= pairs and named_shapes == {s for _, s in drawn} and named_colours == {c for c, _ in drawn}


def tag_f1(predicted: dict[str, set], truth: dict[str, set]) -> dict:
    """Overall (micro) precision, recall and F1 of predicted against true tag sets, per image summed; and the
    per-tag (macro) F1 mean over the tags that occur in the truth."""
    tp = fp = fn = 0
    per_tag: dict[str, list[int]] = {}
    for key, true in truth.items():
        guess = predicted.get(key, set())
        tp += len(guess & true)
        fp += len(guess - true)
        fn += len(true - guess)
        for tag in guess | true:
            counts = per_tag.setdefault(tag, [0, 0, 0])
            counts[0] += tag in guess and tag in true
            counts[1] += tag in guess and tag not in true
            counts[2] += tag in true and tag not in guess
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    occurring = [c for tag, c in per_tag.items() if c[0] + c[2] > 0]
    macro = float(np.mean([2 * c[0] / (2 * c[0] + c[1] + c[2]) for c in occurring])) if occurring else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "macro_f1": macro}


def model_tag_f1(model_dir, test_dir, tags) -> dict:
    """:func:`tag_f1` within ``tags`` of a saved model's (calibrated) tags on the scenes of ``test_dir``, against
    their drawn shapes and colours."""
    import torch

    from tag2text import Tag2TextForCaptioning, Tag2TextProcessor

    model = Tag2TextForCaptioning.from_pretrained(model_dir).eval()
    processor = Tag2TextProcessor.from_pretrained(model_dir)
    truth = read_truth(test_dir)
    names = sorted(truth)
    predicted = {}
    with torch.no_grad():
        for start in range(0, len(names), 50):
            chunk = names[start:start + 50]
            pixels = processor(images=[Image.open(Path(test_dir) / n).convert("RGB") for n in chunk])["pixel_values"]
            for name, output in zip(chunk, model.tag(pixels)):
                predicted[name] = set(output.tags) & set(tags)
    true = {name: truth_tags(objects) & set(tags) for name, objects in truth.items()}
    return tag_f1(predicted, true)


def every_tag_f1(test_dir, tags) -> float:
    """F1 of a tagger that predicts every one of ``tags`` on every image: the level that shows no learning."""
    truth = read_truth(test_dir)
    true = {name: truth_tags(objects) & set(tags) for name, objects in truth.items()}
    return tag_f1({name: set(tags) for name in truth}, true)["f1"]
