"""What happened to every caption of a mining run, for the log and the sidecar files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .caption_cleaning import REPAIRS, SKIP_REASONS

# Distinct unmatched tags kept for the report; on web-scale corpora the long tail would
# otherwise grow without bound. The total is always exact.
MAX_DISTINCT_UNMATCHED = 50_000


@dataclass
class MiningSummary:
    """Counts over a mining run.

    Attributes:
        total: captions seen.
        parsed: captions that reached the parser.
        skipped: reason -> count for captions that did not (see ``caption_cleaning.SKIP_REASONS``).
        repaired: repair -> count for parsed captions that were changed first (``REPAIRS``).
        without_tags: parsed captions that yielded no tag (or, with a vocabulary, no known tag).
        tags_found: mined tags, summed over captions.
        unmatched_total: mined tags that are not in the tag vocabulary.
        unmatched: "type:tag" -> count, for the most frequent unmatched tags.
        skipped_examples: a few "reason: caption" strings for the log.
    """

    total: int = 0
    parsed: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    without_tags: int = 0
    tags_found: int = 0
    unmatched_total: int = 0
    unmatched: Counter = field(default_factory=Counter)
    skipped_examples: list = field(default_factory=list)

    def count_unmatched(self, tag_type: str, tag: str) -> None:
        self.unmatched_total += 1
        key = f"{tag_type}:{tag}"
        if key in self.unmatched or len(self.unmatched) < MAX_DISTINCT_UNMATCHED:
            self.unmatched[key] += 1

    def note_skip(self, reason: str, caption) -> None:
        self.skipped[reason] += 1
        if len(self.skipped_examples) < 10:
            shown = caption if not isinstance(caption, str) else (caption[:80] + "..." if len(caption) > 80 else caption)
            self.skipped_examples.append(f"{reason}: {shown!r}")

    def merge(self, other: "MiningSummary") -> "MiningSummary":
        self.total += other.total
        self.parsed += other.parsed
        self.skipped.update(other.skipped)
        self.repaired.update(other.repaired)
        self.without_tags += other.without_tags
        self.tags_found += other.tags_found
        self.unmatched_total += other.unmatched_total
        for key, count in other.unmatched.items():
            if key in self.unmatched or len(self.unmatched) < MAX_DISTINCT_UNMATCHED:
                self.unmatched[key] += count
        room = 10 - len(self.skipped_examples)
        if room > 0:
            self.skipped_examples.extend(other.skipped_examples[:room])
        return self

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {
            "captions": self.total,
            "parsed": self.parsed,
            "skipped": dict(sorted(self.skipped.items())),
            "repaired": dict(sorted(self.repaired.items())),
            "without_tags": self.without_tags,
            "tags_found": self.tags_found,
            "unmatched_tags": self.unmatched_total,
            "top_unmatched_tags": dict(sorted(self.unmatched.items(), key=lambda kv: (-kv[1], kv[0]))[:20]),
        }

    def format(self) -> str:
        """A few lines for the log: what was parsed, skipped (and why) and repaired."""
        lines = [f"{self.total} captions: {self.parsed} parsed, {self.skipped_total} skipped, {self.without_tags} without tags"]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  skipped {count}: {SKIP_REASONS.get(reason, reason)}")
        for repair, count in sorted(self.repaired.items()):
            lines.append(f"  repaired {count}: {REPAIRS.get(repair, repair)}")
        if self.unmatched_total:
            top = ", ".join(f"{k} ({v})" for k, v in sorted(self.unmatched.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
            lines.append(f"  {self.unmatched_total} mined tags are not in the tag list; most frequent: {top}")
        for example in self.skipped_examples[:5]:
            lines.append(f"  e.g. {example}")
        return "\n".join(lines)
