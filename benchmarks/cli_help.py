"""Seconds per ``tag2text [COMMAND] --help``, each in a fresh process, and whether it imported torch.

    python benchmarks/cli_help.py [--rounds 5] [--budget 1.0]

The budget (issue 11: at most 1 s on a 2-core machine) is checked here, not in a timed test. ``train --help``
is transformers' HfArgumentParser over the installed TrainingArguments (issue 23), so it may take as long as
importing transformers does: its budget is the median of that import (``python -c "from transformers import
HfArgumentParser, TrainingArguments"``, which imports torch too; timed in the same rounds) plus the budget. Each round runs every command once, in turn, so that load on a shared
machine spreads over all of them; the table gives the median and the worst round. The torch column comes from
a separate run that reports ``sys.modules``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tag2text.hub.cli import COMMANDS as SUBCOMMANDS  # light: no torch

COMMANDS = [""] + list(SUBCOMMANDS)
IMPORTS_TRANSFORMERS = {"train"}  # its options are made from the installed TrainingArguments
IMPORT_TRANSFORMERS = "from transformers import HfArgumentParser, TrainingArguments"

PROBE = (
    "import sys; from tag2text.hub.cli import main; code = main({argv!r}); "
    "print('torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)"
)


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("tag2text")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tag2text.hub.cli"]


def time_help(command: str) -> float:
    argv = ([command] if command else []) + ["--help"]
    started = time.perf_counter()
    subprocess.run(console_script() + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def heavy_imports(command: str) -> tuple[bool, bool]:
    argv = ([command] if command else []) + ["--help"]
    result = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True)
    torch, transformers = result.stderr.strip().splitlines()[-1].split()
    return torch == "True", transformers == "True"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds allowed per --help")
    args = parser.parse_args()

    times: dict[str, list[float]] = {c: [] for c in COMMANDS}
    for _ in range(args.rounds):
        for command in COMMANDS:
            times[command].append(time_help(command))
    startup, transformers_import = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        startup.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORT_TRANSFORMERS], check=True)
        transformers_import.append(time.perf_counter() - started)
    import_median = statistics.median(transformers_import)

    print("| command | median s | worst s | imports torch | imports transformers | budget s | within |")
    print("|---|---|---|---|---|---|---|")
    over = []
    for command in COMMANDS:
        median, worst = statistics.median(times[command]), max(times[command])
        torch, transformers = heavy_imports(command)
        budget = args.budget + (import_median if command in IMPORTS_TRANSFORMERS else 0)
        ok = median <= budget and (command in IMPORTS_TRANSFORMERS or not (torch or transformers))
        if not ok:
            over.append(command or "(none)")
        name = f"tag2text {command} --help" if command else "tag2text --help"
        print(f"| {name} | {median:.2f} | {worst:.2f} | {'yes' if torch else 'no'} | "
              f"{'yes' if transformers else 'no'} | {budget:.2f} | {'yes' if ok else 'NO'} |")
    print(f"\nbare `python -c pass`: median {statistics.median(startup):.2f} s; `{IMPORT_TRANSFORMERS}`: median "
          f"{import_median:.2f} s ({args.rounds} rounds)")
    if over:
        print("over budget: " + ", ".join(over))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
