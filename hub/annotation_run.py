"""``tag2text caption ... --output-dir OUT``: annotate a collection in shards, resumable, one process per device.

Run it as it is (one process), or under ``torchrun --nproc_per_node N`` / ``accelerate launch`` (one process
per GPU, or several CPU processes with gloo, on one or many machines). Every process lists the same inputs
(:mod:`.annotation_sources`), reads which keys the complete shards already hold (``--resume``), and takes one
contiguous block of the remaining keys, so the blocks are disjoint whatever the number of processes was
before. Each process writes its own shards (:mod:`.annotation_writer`); process 0 writes ``manifest.json``.

Throughput:

* decoding and preprocessing run in DataLoader worker processes (``--num-workers``; default: the CPUs of
  this process's share of the machine, less one, at most 8) and overlap the model; batches are pinned and
  copied asynchronously on a GPU;
* the vision tower and the tagging head run once per image (:class:`~tag2text.hub.inference.TorchBackend`, the
  model calls of every ``tag2text caption`` path; a RAM / RAM++ model: ``TaggingBackend``, tag rows only);
* batches keep the source order (neighbouring tar members and parquet row groups), not sorted by image size:
  the processor resizes every image to the same square, so every batch is one dense tensor of the same
  shape and there is no padding that sorting could save;
* ``--dtype bfloat16`` (weights) or ``--autocast bfloat16`` picks the faster arithmetic; on the CPU the model
  already runs packed oneDNN linears and micro-batches its vision tower.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import time
from collections import Counter

from .cli_args import UsageError, check_device, non_negative_int, positive_int
from .device_choice import pin_batches, process_device

logger = logging.getLogger(__name__)

# Pillow's own limit (about 89.5 megapixels); Pillow refuses images above twice it outright.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def add_sharded_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of sharded annotation, added to ``tag2text caption``."""
    group = parser.add_argument_group("annotating datasets (sharded, resumable; with --output-dir)")
    group.add_argument("--output-dir", default=None,
                       help="write shards part-RANKofWORLD-NNNNN.jsonl (or .parquet) and manifest.json here")
    group.add_argument("--resume", action="store_true", help="skip every key already in a complete shard")
    group.add_argument("--format", default="jsonl", choices=["jsonl", "parquet"], help="shard format")
    group.add_argument("--shard-size", type=positive_int, default=1000, help="rows per shard (default 1000)")
    group.add_argument("--num-workers", type=non_negative_int, default=None,
                       help="DataLoader worker processes for decoding (default: from the CPUs)")
    group.add_argument("--shards", nargs="+", default=None, action="extend",
                       help='webdataset tar shards, e.g. "data/{000000..000099}.tar"')
    group.add_argument("--parquet", nargs="+", default=None, action="extend", help="parquet files")
    group.add_argument("--dataset", default=None, help="a save_to_disk dataset or an imagefolder directory")
    group.add_argument("--split", default=None, help="the split of --dataset (default: all)")
    group.add_argument("--image-column", default="image", help="image column of --parquet / --dataset")
    group.add_argument("--key-column", default=None, help="key column of --parquet (default: FILE:row)")
    group.add_argument("--max-image-pixels", type=positive_int, default=DEFAULT_MAX_IMAGE_PIXELS,
                       help="images with more pixels are failed rows ('too large')")
    group.add_argument("--autocast", default="none", choices=["none", "bfloat16", "float16"],
                       help="run the model under torch.autocast in this dtype (weights stay --dtype)")


def wants_sharded_run(args) -> bool:
    """Whether ``tag2text caption`` should run this module: an output directory, an input only this module
    reads, or no input at all (so that the missing input is reported here)."""
    return bool(args.output_dir or args.shards or args.parquet or args.dataset or not args.images)


# -- decoding (in DataLoader workers) ---------------------------------------------------------------------------


class ImageFailure(Exception):
    """An image that becomes a failed row; ``reason`` is one of missing, unreadable, truncated, too large."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _reason(error: BaseException) -> str:
    from PIL import Image

    cause = error.__cause__ or error
    if isinstance(cause, Image.DecompressionBombError):
        return "too large"
    if "truncat" in str(cause).lower():
        return "truncated"
    return "unreadable"


def decode_image(path: str | None, data: bytes | None, max_pixels: int):
    """The RGB PIL image of a file or of bytes, refused before decoding when its header is over ``max_pixels``
    (:func:`tag2text.image_loading.open_within_pixels`); raises :class:`ImageFailure`."""
    from ..image_loading import ImageInputError, ImageTooLargeError, open_within_pixels, to_rgb_image

    if path is None and data is None:
        raise ImageFailure("unreadable", "no image data (empty cell)")
    if path is not None and not os.path.isfile(path):
        raise ImageFailure("missing", f"{path}: no such file")
    label = path if path is not None else f"{len(data)} bytes"
    try:
        with open_within_pixels(path if path is not None else io.BytesIO(data), max_pixels, label) as opened:
            if path is None:
                opened.load()
                return to_rgb_image(opened.copy())
        return to_rgb_image(path)
    except ImageTooLargeError as error:
        if error.width is None:  # above PIL's own limit
            raise ImageFailure("too large", f"{label}: not a readable image ({error.__cause__})") from error
        raise ImageFailure("too large", f"{label}: {error.width}x{error.height} pixels is above --max-image-pixels "
                                        f"{max_pixels}") from error
    except ImageInputError as error:
        raise ImageFailure(_reason(error), str(error)) from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageFailure(_reason(error), f"{label}: not a readable image ({error})") from error


class DecodedImages:
    """Map-style dataset of (key, source, pixel array or None, error reason, error message)."""

    def __init__(self, items, tables, image_processor, max_pixels: int):
        self.items, self.tables = items, tables
        self.image_processor = image_processor
        self.max_pixels = max_pixels

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        import torch

        from .annotation_sources import read_item

        item = self.items[index]
        try:
            path, data = read_item(item, self.tables)
            image = decode_image(path, data, self.max_pixels)
            pixels = self.image_processor(images=image, return_tensors="np")["pixel_values"][0]
            return item.key, item.source, torch.from_numpy(pixels), None, None
        except ImageFailure as failure:
            return item.key, item.source, None, failure.reason, str(failure)
        except (OSError, ValueError) as error:  # the tar or parquet file itself, or the pixels, could not be read
            return item.key, item.source, None, "unreadable", f"{item.source}: {error}"


def collate(samples):
    import torch

    good = [sample[2] for sample in samples if sample[2] is not None]
    return {"samples": [(key, source, pixels is not None, reason, message)
                        for key, source, pixels, reason, message in samples],
            "pixel_values": torch.stack(good) if good else None}


def _worker_init(_):
    import torch

    torch.set_num_threads(1)  # decoding is single-threaded PIL/numpy work; leave the cores to the model


def default_num_workers(local_processes: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // max(1, local_processes) - 1))


# -- processes ------------------------------------------------------------------------------------------------


class Processes:
    """Rank, world size and barriers of the launch: accelerate's PartialState (which starts the process
    group of ``torchrun`` / ``accelerate launch``: gloo on the CPU, nccl on GPUs), or one process."""

    def __init__(self, cpu: bool):
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.state = None
        if launched:
            try:
                from accelerate import PartialState
            except ImportError:
                raise UsageError("several processes need accelerate: pip install 'tag2text[annotate]'") from None

            self.state = PartialState(cpu=cpu)
            self.rank, self.world = self.state.process_index, self.state.num_processes
            self.local_rank = self.state.local_process_index
            self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        else:
            self.rank, self.world, self.local_rank, self.local_world = 0, 1, 0, 1

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def _device(args, processes):
    import torch

    name = process_device(args.device, processes.world, processes.local_rank)
    check_device(name, "--device")
    return torch.device(name)


def _check_arguments(args) -> None:
    if getattr(args, "output", None):
        raise UsageError("--output writes one file; with --output-dir the rows go to shards, give one of them")
    if not args.output_dir:
        if not (args.images or args.shards or args.parquet or args.dataset):
            raise UsageError("give image files or folders (or --shards, --parquet or --dataset with --output-dir)")
        raise UsageError("--shards, --parquet and --dataset write shards: give --output-dir")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.autocast == "float16" and args.device == "cpu":
        raise UsageError("--autocast float16 needs a GPU (use bfloat16 on the CPU)")


def _share(pending: list, rank: int, world: int) -> list:
    """The contiguous block of ``pending`` for ``rank``: blocks keep tar/parquet reads local."""
    return pending[rank * len(pending) // world: (rank + 1) * len(pending) // world]


def run_sharded(args) -> int:
    import torch
    from tqdm.auto import tqdm

    from . import annotation_writer as writer_module
    from .annotation_sources import collect_items
    from .caption_io import load_caption_setup
    from .model_source import load_model, resolve_model_source, tagging_only_family

    started_at, started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    _check_arguments(args)
    source = resolve_model_source(args.model)
    config, processor, warning = load_caption_setup(source, args)
    if warning:
        logger.warning("%s", warning)
    items, tables = collect_items(args)
    output_dir = args.output_dir
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output-dir {output_dir}: not a directory")
    if writer_module.complete_shards(output_dir) and not args.resume:
        raise UsageError(f"--output-dir {output_dir} already holds shards: pass --resume to finish that run, "
                         "or choose another directory")
    processes = Processes(cpu=args.device == "cpu")
    device = _device(args, processes)
    if processes.rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        removed = writer_module.remove_temporary_files(output_dir)
        if removed:
            logger.info("removed %d half-written shard(s) of an earlier run", removed)
    processes.barrier()
    done, _, _ = writer_module.read_done(output_dir) if args.resume else (set(), Counter(), 0)
    processes.barrier()  # nobody writes before every process has read the same done keys
    pending = [item for item in items if item.key not in done]
    share = _share(pending, processes.rank, processes.world)
    if processes.rank == 0 and done:
        logger.info("resuming: %d of %d keys are done, %d to go", len(items) - len(pending), len(items), len(pending))

    num_workers = args.num_workers if args.num_workers is not None else default_num_workers(processes.local_world)
    loader = torch.utils.data.DataLoader(
        DecodedImages(share, tables, getattr(processor, "image_processor", processor), args.max_image_pixels),
        batch_size=args.batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
        pin_memory=pin_batches(device.type), worker_init_fn=_worker_init if num_workers else None,
        persistent_workers=False,
    )
    # Start the workers before the model loads: they fork a small process and decode while it loads.
    batches = iter(loader)
    model = load_model(source, dtype=getattr(torch, args.dtype)).to(device).eval()
    fields = writer_module.TAGGING_FIELDS if tagging_only_family(config.model_type) else writer_module.FIELDS
    writer = writer_module.ShardWriter(output_dir, processes.rank, processes.world, args.shard_size, args.format,
                                       fields=fields)
    label = f"annotating [{processes.rank + 1}/{processes.world}]" if processes.world > 1 else "annotating"
    progress = tqdm(total=len(share), desc=label, unit="img", disable=None if processes.local_rank == 0 else True,
                    dynamic_ncols=True)
    _annotate(batches, model, processor, device, args, writer, progress)
    writer.flush()
    progress.close()

    processes.barrier()
    if processes.rank == 0:
        manifest = _manifest(args, items, output_dir, processes.world, started_at, time.perf_counter() - started,
                             len(done))
        writer_module.write_manifest(output_dir, manifest)
        _summary(manifest, output_dir)
    processes.barrier()
    manifest = writer_module.read_manifest(output_dir)
    return 1 if manifest["failed"] or manifest["missing"] else 0


def _annotate(batches, model, processor, device, args, writer, progress) -> Counter:
    """Run the model over the DataLoader's batches and hand every row to ``writer``; failures by reason."""
    import torch

    from .caption_io import caption_rows
    from .inference import torch_backend

    backend = torch_backend(model, processor)
    autocast = (torch.autocast(device.type, dtype=getattr(torch, args.autocast)) if args.autocast != "none"
                else contextlib.nullcontext())
    failed = Counter()
    for batch in batches:
        results = iter(())
        if batch["pixel_values"] is not None:
            pixel_values = batch["pixel_values"].to(device, non_blocking=True)
            with autocast:
                results = iter(caption_rows(backend, pixel_values, args))
        for key, source, good, reason, message in batch["samples"]:
            if good:
                writer.add({"key": key, "source": source, **next(results)})
                continue
            failed[reason] += 1
            if sum(failed.values()) <= 10:
                logger.warning("%s: %s", reason, message)
            writer.add({"key": key, "source": source, "error": reason, "error_message": message})
        progress.update(len(batch["samples"]))
        if failed:
            progress.set_postfix(failed=sum(failed.values()), refresh=False)
    return failed


def _options(args) -> dict:
    names = ("tags", "threshold", "num_beams", "max_length", "batch_size", "device", "dtype", "autocast", "format",
             "shard_size", "image_column", "key_column", "split", "max_image_pixels")
    return {name: getattr(args, name, None) for name in names}


def _manifest(args, items, output_dir, world, started_at, seconds, rows_before: int) -> dict:
    from . import annotation_writer as writer_module

    keys, failures, rows = writer_module.read_done(output_dir)
    input_keys = {item.key for item in items}
    previous = writer_module.read_manifest(output_dir) if args.resume else None
    runs = list(previous.get("runs", [])) if previous else []
    images = rows - rows_before
    runs.append({"started": started_at, "seconds": round(seconds, 3), "processes": world, "images": images,
                 "images_per_second": round(images / seconds, 4) if seconds > 0 else None,
                 "resumed": bool(args.resume)})
    if previous and previous.get("model") not in (None, args.model):
        logger.warning("this run used --model %s, the earlier run(s) %s", args.model, previous.get("model"))
    failed = sum(failures.values())
    missing = len(input_keys - keys)
    return {
        "complete": missing == 0,
        "inputs": len(items),
        "rows": rows,
        "annotated": rows - failed,
        "failed": failed,
        "failures_by_reason": dict(sorted(failures.items())),
        "missing": missing,
        "keys_not_in_inputs": len(keys - input_keys),
        "shards": writer_module.complete_shards(output_dir),
        "model": args.model,
        "options": _options(args),
        "runs": runs,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _summary(manifest: dict, output_dir: str) -> None:
    run = manifest["runs"][-1]
    failures = ", ".join(f"{reason}: {count}" for reason, count in manifest["failures_by_reason"].items())
    line = (f"annotated {manifest['annotated']} of {manifest['inputs']} images, {manifest['failed']} failed"
            f"{f' ({failures})' if failures else ''}, {manifest['missing']} missing; this run {run['images']} images "
            f"in {run['seconds']:.1f} s ({run['images_per_second'] or 0:.2f} images/s, {run['processes']} "
            f"process{'es' if run['processes'] > 1 else ''}); {len(manifest['shards'])} shard"
            f"{'s' if len(manifest['shards']) != 1 else ''} in {output_dir}")
    print(line, file=sys.stderr)
