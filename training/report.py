"""Training reports: loss curves per component (PNG) and a contact sheet of images with tags and captions."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

COMPONENTS = ("loss", "loss_tag", "loss_lm", "loss_itc", "loss_itm")


def loss_series(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """``{name: (steps, values)}`` of the training and evaluation losses in a Trainer's ``log_history``."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for entry in log_history:
        step = entry.get("step")
        for key, value in entry.items():
            name = key[len("eval_"):] if key.startswith("eval_") else key
            if name in COMPONENTS and isinstance(value, (int, float)):
                label = key if key.startswith("eval_") else f"train_{key}"
                steps, values = series.setdefault(label, ([], []))
                steps.append(int(step))
                values.append(float(value))
    return series


def plot_losses(log_history: list[dict], directory: str | Path) -> list[Path]:
    """One PNG per loss component (training curve, evaluation points on top); returns the files."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    series = loss_series(log_history)
    written = []
    for component in COMPONENTS:
        train = series.get(f"train_{component}")
        evaluation = series.get(f"eval_{component}")
        if not train and not evaluation:
            continue
        figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
        if train:
            axis.plot(*train, label="train", linewidth=1.2)
        if evaluation:
            axis.plot(*evaluation, "o-", label="held-out", markersize=4)
        axis.set_xlabel("step")
        axis.set_ylabel(component)
        axis.set_title(component.replace("loss_", "loss: ") if component != "loss" else "weighted total loss")
        if component == "loss_tag":
            axis.set_yscale("log")  # the summed ASL falls over orders of magnitude
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        path = directory / f"{component}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def contact_sheet(entries: list[dict], path: str | Path, columns: int = 4, thumb: int = 128,
                  text_lines: int = 7) -> Path:
    """A grid of images, each with lines of text under it.

    Args:
        entries: ``{"image": PIL image or path, "lines": [str, ...], "ok": bool or None}``; ``ok`` colours the
            frame green/red.
    """
    font = ImageFont.load_default()
    char_width = 6
    wrap = max(10, (thumb + 60) // char_width)
    cell_w, line_h = thumb + 60, 11
    cell_h = thumb + 8 + text_lines * line_h
    rows = (len(entries) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, max(rows, 1) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for number, entry in enumerate(entries):
        x, y = (number % columns) * cell_w, (number // columns) * cell_h
        image = entry["image"]
        if not isinstance(image, Image.Image):
            image = Image.open(image)
        image = image.convert("RGB").resize((thumb, thumb), Image.Resampling.NEAREST)
        left = x + (cell_w - thumb) // 2
        sheet.paste(image, (left, y + 2))
        ok = entry.get("ok")
        if ok is not None:
            draw.rectangle([left - 2, y, left + thumb + 1, y + thumb + 3], outline=(0, 150, 0) if ok else (200, 0, 0),
                           width=2)
        lines = []
        for line in entry.get("lines", []):
            lines.extend(textwrap.wrap(line, wrap) or [""])
        for k, line in enumerate(lines[:text_lines]):
            draw.text((x + 3, y + thumb + 6 + k * line_h), line, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
