"""``tag2text build-tag-list``: count mined tags over a caption corpus and write the top-K list."""

from __future__ import annotations

import argparse

from .cli_args import UsageError, existing_path, output_file, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--captions",
        required=True,
        metavar="FILE_OR_DIR",
        help="captions as for mine-tags: text, .jsonl/.json, .csv/.tsv, an imagefolder directory, "
        "or a directory written by Dataset.save_to_disk",
    )
    parser.add_argument("--top-k", type=positive_int, required=True, metavar="K", help="keep at most K tags")
    parser.add_argument("--min-count", type=positive_int, default=1, metavar="C", help="keep tags found in at least C captions")
    parser.add_argument("--output", required=True, metavar="tag_list.txt", help="tag list to write (missing folders are created); the .counts.json sidecar goes next to it")
    parser.add_argument("--stop-list", metavar="FILE", help="tags never to keep, one a line ('tag' or 'type:tag')")
    parser.add_argument("--spacy-model", metavar="NAME", help="spaCy English pipeline (default en_core_web_sm)")
    parser.add_argument("--batch-size", type=positive_int, default=256, metavar="N", help="captions per spaCy batch")
    parser.add_argument("--num-proc", type=positive_int, default=None, metavar="N", help="worker processes (default: chosen by corpus size)")
    parser.add_argument("--synonyms", metavar="FILE", help="synonym file applied before counting")
    parser.add_argument("--caption-field", metavar="NAME", help="field/column holding the captions (default caption, captions or text)")
    parser.add_argument(
        "--no-compound-heads", action="store_true", help="do not also count 'racket' for 'tennis racket'"
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args) -> int:

    from ..processing.mining import (
        SpacyModelNotFoundError,
        TagMiner,
        build_tag_list,
        open_caption_source,
        read_stop_list,
    )

    existing_path(args.captions, "--captions")
    for option, value in (("--stop-list", args.stop_list), ("--synonyms", args.synonyms)):
        if value is not None:
            existing_path(value, option)
    output_file(args.output, "--output")
    try:
        stop_list = read_stop_list(args.stop_list) if args.stop_list else None
        source = open_caption_source(args.captions, args.caption_field)
        miner = TagMiner(spacy_model=args.spacy_model, synonyms=args.synonyms, progress=not args.no_progress)
        result = build_tag_list(
            (record.caption for record in source.records),
            args.output,
            top_k=args.top_k,
            min_count=args.min_count,
            stop_list=stop_list,
            miner=miner,
            batch_size=args.batch_size,
            n_process=args.num_proc,
            count_compound_heads=not args.no_compound_heads,
            progress=not args.no_progress,
            total=source.size,
        )
    except (FileNotFoundError, ValueError, TypeError, SpacyModelNotFoundError) as err:
        raise UsageError(str(err))
    by_type = {t: result.types.count(t) for t in ("object", "action", "attribute")}
    print(f"build-tag-list: {source.name}: kept {len(result.entries)} of {result.candidates} distinct tags {by_type}")
    print(f"wrote {result.tag_list_path} and {result.sidecar_path}")
    if result.summary.skipped_total:
        print(f"{result.summary.skipped_total} of {result.summary.total} captions skipped: {dict(result.summary.skipped)}")
    return 0
