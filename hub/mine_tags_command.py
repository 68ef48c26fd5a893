"""``tag2text mine-tags``: parse captions into object/attribute/action tags, one JSON line each."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import deque
from pathlib import Path

from .cli_args import UsageError, existing_path, make_parent_folders, output_file, positive_int

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--captions",
        required=True,
        metavar="FILE_OR_DIR",
        help="a text file (one caption a line), a .jsonl/.json file with a 'caption' or 'captions' field "
        "(COCO and Karpathy JSON too), a .csv/.tsv file, or an imagefolder directory with metadata.jsonl",
    )
    parser.add_argument("--output", required=True, metavar="FILE.jsonl",
                        help="where to write one JSON line per caption (missing folders are created)")
    parser.add_argument("--tag-list", metavar="FILE", help="match tags to this tag list and add tag_ids (its .counts.json sidecar gives types)")
    parser.add_argument("--spacy-model", metavar="NAME", help="spaCy English pipeline (default en_core_web_sm)")
    parser.add_argument("--batch-size", type=positive_int, default=256, metavar="N", help="captions per spaCy batch")
    parser.add_argument("--num-proc", type=positive_int, default=None, metavar="N", help="worker processes (default: chosen by input size)")
    parser.add_argument("--synonyms", metavar="FILE", help="synonym file (.json, or variant<TAB>canonical[<TAB>type] lines)")
    parser.add_argument("--caption-field", metavar="NAME", help="field/column holding the captions (default caption, captions or text)")
    parser.add_argument("--max-words", type=positive_int, default=None, metavar="N", help="truncate longer captions (default 100)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args) -> int:
    from ..processing.mining import (
        DEFAULT_MAX_WORDS,
        MiningSummary,
        SpacyModelNotFoundError,
        TagMiner,
        open_caption_source,
    )

    existing_path(args.captions, "--captions")
    for option, value in (("--tag-list", args.tag_list), ("--synonyms", args.synonyms)):
        if value is not None:
            existing_path(value, option)
    output_file(args.output, "--output")
    output = Path(args.output)
    try:
        source = open_caption_source(args.captions, args.caption_field)
        miner = TagMiner(
            tag_list=args.tag_list,
            spacy_model=args.spacy_model,
            synonyms=args.synonyms,
            max_words=args.max_words or DEFAULT_MAX_WORDS,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError, TypeError, SpacyModelNotFoundError) as err:
        raise UsageError(str(err))

    metas: deque = deque()

    def captions():
        for record in source.records:
            metas.append(record.meta)
            yield record.caption

    summary = MiningSummary()
    make_parent_folders(output)
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as out:
            for result in miner.iter_mine(
                captions(), batch_size=args.batch_size, n_process=args.num_proc, summary=summary, total=source.size
            ):
                meta = metas.popleft()
                if miner.vocabulary is None:
                    del result["tag_ids"]
                row = {**result, **{k: v for k, v in meta.items() if k not in result}}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(partial, output)
    except (ValueError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise UsageError(str(err))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise

    if summary.total == 0:
        raise UsageError(f"no captions found in {args.captions}")
    print(f"mine-tags: {source.name} -> {output}")
    print(summary.format())
    return 0
