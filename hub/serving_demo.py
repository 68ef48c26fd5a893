"""The web demo of ``tag2text serve`` (Gradio): upload or paste an image, see its tags with their scores and
the caption, steer the caption with your own tags, move the tag threshold. A tagging-only model (RAM, RAM++) gets
a page of English and Chinese tags with their scores.

The page calls the same :class:`~tag2text.hub.serving_service.TaggingService` as the HTTP API, so its requests
are checked by the same rules and batched with the API's. Example images are drawn here at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw

from .serving_inputs import RequestError

logger = logging.getLogger(__name__)


def example_images(size: int = 256) -> list[tuple[str, Image.Image]]:
    """A few simple scenes drawn with PIL (nothing is downloaded), with their titles."""
    scenes = []

    image = Image.new("RGB", (size, size), (110, 170, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, size * 0.65, size, size], fill=(60, 150, 60))
    draw.ellipse([size * 0.35, size * 0.42, size * 0.65, size * 0.72], fill=(220, 40, 40))
    draw.ellipse([size * 0.72, size * 0.08, size * 0.9, size * 0.26], fill=(250, 220, 60))
    scenes.append(("red ball on grass", image))

    image = Image.new("RGB", (size, size), (200, 200, 205))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, size * 0.7, size, size], fill=(70, 70, 75))
    draw.rounded_rectangle([size * 0.15, size * 0.45, size * 0.85, size * 0.7], radius=12, fill=(240, 200, 30))
    for x in (0.3, 0.7):
        draw.ellipse([size * (x - 0.08), size * 0.62, size * (x + 0.08), size * 0.78], fill=(20, 20, 20))
    scenes.append(("yellow car on a road", image))

    image = Image.new("RGB", (size, size), (240, 240, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([size * 0.45, size * 0.55, size * 0.55, size * 0.95], fill=(110, 70, 30))
    draw.ellipse([size * 0.2, size * 0.1, size * 0.8, size * 0.65], fill=(30, 120, 40))
    scenes.append(("a tree", image))
    return scenes


def _threshold_note(defaults: dict) -> str:
    per_class = defaults["per_class_thresholds"]
    return (f"the model's thresholds ({per_class} per-class, {defaults['threshold']} otherwise)"
            if per_class else f"the model's threshold ({defaults['threshold']})")


def _threshold_controls(defaults: dict):
    """(use the model's thresholds checkbox, one-threshold slider), placed in the current Gradio column."""
    use_model_thresholds = gr.Checkbox(value=True, label=f"Use {_threshold_note(defaults)}",
                                       elem_id="t2t-model-thresholds")
    threshold = gr.Slider(0.0, 1.0, value=defaults["threshold"], step=0.01,
                          label="Tag threshold (when the box above is cleared)", elem_id="t2t-threshold")
    return use_model_thresholds, threshold


def build_tagging_demo(service) -> gr.Blocks:
    """The page of a tagging-only model (RAM, RAM++): English and Chinese tags with their scores, no caption."""
    described = service.model.describe()
    defaults = described["defaults"]

    def tag(image_path, use_model_thresholds, threshold):
        if not image_path:
            raise gr.Error("Upload or paste an image first.")
        try:
            data = Path(image_path).read_bytes()
            fields = {"image": image_path, "threshold": None if use_model_thresholds else threshold}
            result = service.answer("tags", data, fields)
        except RequestError as error:
            raise gr.Error(error.message) from error
        chinese = result.get("tags_zh")
        # The released Chinese names often end in a space: strip for display (the API returns them as stored).
        shown_chinese = " | ".join(name.strip() for name in chinese) if chinese is not None else "(no Chinese names)"
        return " | ".join(result["tags"]), shown_chinese, result["tag_scores"]

    family = {"ram": "RAM", "ram_plus": "RAM++"}.get(described.get("model_type"), "RAM")
    with gr.Blocks(title=family, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {family} image tagging\nUpload or paste an image; the model tags it in English and Chinese "
            f"({described['num_tags']} tags; this model writes no captions).\n\n"
            f"Model `{described['model']}` on {described['device']} ({described['dtype']})."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", image_mode=None, format="png", sources=["upload", "clipboard"],
                                 label="Image", height=320, elem_id="t2t-image")
                use_model_thresholds, threshold = _threshold_controls(defaults)
                run = gr.Button("Tag", variant="primary", elem_id="t2t-run")
            with gr.Column():
                tags = gr.Textbox(label="Tags (English)", interactive=False, elem_id="t2t-tags")
                tags_zh = gr.Textbox(label="Tags (Chinese)", interactive=False, elem_id="t2t-tags-zh")
                scores = gr.Label(label="Tag scores", show_heading=False, elem_id="t2t-scores")
        scenes = example_images()
        gr.Examples(examples=[[picture] for _, picture in scenes], inputs=[image],
                    label="Examples (drawn at start-up: " + ", ".join(title for title, _ in scenes) + ")")
        run.click(tag, inputs=[image, use_model_thresholds, threshold], outputs=[tags, tags_zh, scores],
                  api_name="tags")
    demo.queue(default_concurrency_limit=max(service.batcher.max_batch_size, 1))
    return demo


def build_demo(service) -> gr.Blocks:
    """The Gradio page around a :class:`~tag2text.hub.serving_service.TaggingService`."""
    if not getattr(service.model, "writes_captions", True):
        return build_tagging_demo(service)
    described = service.model.describe()
    defaults = described["defaults"]

    def tag_and_caption(image_path, steering, use_model_thresholds, threshold):
        if not image_path:
            raise gr.Error("Upload or paste an image first.")
        try:
            data = Path(image_path).read_bytes()
            fields = {"image": image_path, "tags": steering or None,
                      "threshold": None if use_model_thresholds else threshold}
            result = service.answer("caption", data, fields)
        except RequestError as error:
            raise gr.Error(error.message) from error
        return result["caption"], " | ".join(result["tags"]), result["tag_scores"]

    with gr.Blocks(title="Tag2Text", analytics_enabled=False) as demo:
        gr.Markdown(
            "# Tag2Text\nImage tagging and tag-guided captioning. Upload or paste an image; the model tags it "
            "and writes a caption guided by the tags. Type your own tags (`dog | grass`) to steer the caption.\n\n"
            f"Model `{described['model']}` on {described['device']} ({described['dtype']})."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", image_mode=None, format="png", sources=["upload", "clipboard"],
                                 label="Image", height=320, elem_id="t2t-image")
                steering = gr.Textbox(label="Steering tags (optional)", placeholder="dog | grass",
                                      elem_id="t2t-steering")
                use_model_thresholds, threshold = _threshold_controls(defaults)
                run = gr.Button("Tag and caption", variant="primary", elem_id="t2t-run")
            with gr.Column():
                caption = gr.Textbox(label="Caption", interactive=False, elem_id="t2t-caption")
                tags = gr.Textbox(label="Tags the caption was guided by", interactive=False, elem_id="t2t-tags")
                scores = gr.Label(label="Tag scores", show_heading=False, elem_id="t2t-scores")
        scenes = example_images()
        gr.Examples(examples=[[picture] for _, picture in scenes], inputs=[image],
                    label="Examples (drawn at start-up: " + ", ".join(title for title, _ in scenes) + ")")
        run.click(tag_and_caption, inputs=[image, steering, use_model_thresholds, threshold],
                  outputs=[caption, tags, scores], api_name="caption")
    # Page users' requests run concurrently, so the batcher can group them like API requests.
    demo.queue(default_concurrency_limit=max(service.batcher.max_batch_size, 1))
    return demo
