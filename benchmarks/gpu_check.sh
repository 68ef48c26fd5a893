#!/usr/bin/env bash
# The GPU check (issue 22, point 6): on a machine with one NVIDIA GPU and a CUDA build of torch,
#   1. the tests marked `gpu` (tests/test_gpu.py): caption and annotate with --device cuda in float32 and
#      bfloat16, a few `tag2text train --bf16` steps, a request served on CUDA;
#   2. benchmarks/annotate.py at batch 8, 32 and 64 in bfloat16 (images per second, peak GPU memory);
# then one markdown table. At most 8 minutes: each stage runs under its own time limit.
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine
#   bash benchmarks/gpu_check.sh --prepare   # beforehand, where pip reaches PyPI: wheels for an offline GPU machine
#
# Which Python: $PYTHON if set, else .venv/bin/python if its torch sees a GPU, else python3. When that Python
# cannot import tag2text with what the check needs, the package is installed for this run only: from the
# wheels in .whl/ when present (made by --prepare; a machine without a package index needs them) into $SITE
# (default /tmp/tag2text_gpu_site, put first on PYTHONPATH) beside the machine's own torch, a CUDA torch being
# too large to carry; otherwise from the package index into a virtual environment $GPU_VENV (default
# /tmp/tag2text_gpu_venv) that sees the machine's packages.
#
# Logs and the table go to $OUT when set (the device tool brings that folder back), else
# /tmp/tag2text_gpu_check. Exit status: 0 when the tests passed and the benchmark ran, 1 otherwise, 2 when
# the machine cannot run the check at all.

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$(pwd)
WHEELS="$REPO/.whl"
SITE=${SITE:-/tmp/tag2text_gpu_site}
GPU_VENV=${GPU_VENV:-/tmp/tag2text_gpu_venv}
RESULTS=${OUT:-/tmp/tag2text_gpu_check}
TESTS_LIMIT_S=${TESTS_LIMIT_S:-210}
BENCHMARK_LIMIT_S=${BENCHMARK_LIMIT_S:-240}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False

say() { echo "gpu_check: $*" >&2; }

# -- --prepare: wheels of everything the check imports besides the machine's own torch stack -----------------
if [ "${1:-}" = "--prepare" ]; then
    PY=${PYTHON:-$REPO/.venv/bin/python}
    [ -x "$PY" ] || { say "--prepare reads the versions to carry from $PY, which is missing (make install)"; exit 2; }
    # The dependency closure of what the check imports, at the versions installed here (the ones the suite
    # passes with), for CPython 3.12 on Linux x86-64 (the device machines' python3). Left out: torch and what
    # the GPU machine's image holds in builds tied to it or too large to carry (numpy, pillow, pyarrow, pandas).
    pins=$("$PY" - <<'PYTHON'
import importlib.metadata as metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOTS = ["transformers", "huggingface_hub", "tokenizers", "safetensors", "tqdm", "accelerate", "datasets",
         "fastapi", "starlette", "uvicorn", "python-multipart", "pytest", "packaging"]
LEFT_OUT = {"torch", "numpy", "pillow", "pyarrow", "pandas", "triton", "setuptools", "pip"}
ENVIRONMENT = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
               "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
seen, todo = {}, [canonicalize_name(name) for name in ROOTS]
while todo:
    name = todo.pop()
    if name in seen or name in LEFT_OUT or name.startswith(("nvidia-", "cuda-")):
        continue
    distribution = metadata.distribution(name)
    seen[name] = distribution.version
    for text in distribution.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(ENVIRONMENT):
            todo.append(canonicalize_name(requirement.name))
print(" ".join(f"{name}=={version}" for name, version in sorted(seen.items())))
PYTHON
) || { say "could not read the installed versions with $PY"; exit 2; }
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    exclude="$REPO/.git/info/exclude"
    if [ -d "$REPO/.git/info" ] && ! grep -qx '/.whl/' "$exclude" 2>/dev/null; then
        echo '/.whl/' >> "$exclude"  # the wheels travel as an ignored, carried folder, never committed
    fi
    say "downloading: $pins"
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" $pins || exit 2
    say "$(ls "$WHEELS" | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1) in .whl/ (ignored by git: carry it)"
    exit 0
fi

mkdir -p "$RESULTS"
started=$(date +%s)

# -- a Python whose torch sees a GPU -------------------------------------------------------------------------
sees_gpu() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }
PY=""
candidates=(${PYTHON:+"$PYTHON"} "$REPO/.venv/bin/python" python3)
for candidate in "${candidates[@]}"; do
    if command -v "$candidate" >/dev/null 2>&1 && sees_gpu "$candidate"; then PY=$candidate; break; fi
done
if [ -z "$PY" ]; then
    say "no Python here has a torch that sees a CUDA GPU (tried ${candidates[*]}); nothing run"
    exit 2
fi

"$PY" - <<'PYTHON' | tee "$RESULTS/environment.txt"
import platform

import torch

properties = torch.cuda.get_device_properties(0)
print(f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB), torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}), Python {platform.python_version()}")
PYTHON

# -- tag2text and what the check imports -------------------------------------------------------------------
check_imports='import tag2text.hub.cli, tag2text.hub.serving_api, transformers, datasets, accelerate, uvicorn, pytest
from tag2text import Tag2TextForCaptioning'
if ! "$PY" -c "$check_imports" >/dev/null 2>&1; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        say "installing $(ls "$WHEELS"/*.whl | wc -l) carried wheels and this tree into $SITE"
        rm -rf "$SITE" && mkdir -p "$SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
            || { say "installing the wheels in .whl/ failed"; exit 2; }
        # The package itself, built from this tree without its requirements (they are in $SITE or the machine's).
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
            --upgrade --target "$SITE" "$REPO" || { say "installing tag2text from $REPO failed"; exit 2; }
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        # A package index instead: a virtual environment that sees this Python's packages (its CUDA torch
        # among them, kept when it meets the requirement) and gets tag2text and the rest from the index.
        say "no .whl/: installing tag2text[annotate,serve] from the package index into $GPU_VENV"
        "$PY" -m venv --system-site-packages "$GPU_VENV" && "$GPU_VENV/bin/python" -m pip install -q \
            "$REPO[annotate,serve]" pytest \
            || { say "no wheels in .whl/ and no package index: run 'bash benchmarks/gpu_check.sh --prepare'" \
                     "where pip works, and carry .whl"; exit 2; }
        PY="$GPU_VENV/bin/python"
        sees_gpu "$PY" || { say "the torch that $PY ended with does not see the GPU"; exit 2; }
    fi
fi
if ! error=$("$PY" -c "$check_imports" 2>&1); then
    say "tag2text does not import with $PY: $(echo "$error" | tail -1)"
    exit 2
fi
"$PY" -c 'import tag2text, transformers
print(f"tag2text {tag2text.__version__} ({tag2text.__file__}), transformers {transformers.__version__}")' \
    | tee -a "$RESULTS/environment.txt"

# -- 1. the GPU tests ---------------------------------------------------------------------------------------
say "running the GPU tests (limit ${TESTS_LIMIT_S} s)"
timeout --kill-after=10 "$TESTS_LIMIT_S" "$PY" -m pytest -q --gpu -p no:cacheprovider tests/test_gpu.py \
    > "$RESULTS/gpu_tests.log" 2>&1
tests_status=$?
tail -n 40 "$RESULTS/gpu_tests.log" >&2
tests_line=$(grep -E "(passed|failed|error)" "$RESULTS/gpu_tests.log" | tail -1)
[ "$tests_status" -eq 124 ] && tests_line="stopped at the ${TESTS_LIMIT_S} s limit; ${tests_line:-no summary}"

# -- 2. the annotation benchmark ----------------------------------------------------------------------------
say "running benchmarks/annotate.py at batch 8, 32 and 64 in bfloat16 (limit ${BENCHMARK_LIMIT_S} s)"
timeout --kill-after=10 "$BENCHMARK_LIMIT_S" "$PY" benchmarks/annotate.py --device cuda --dtype bfloat16 \
    --batch-sizes 8 32 64 --configs new-1x8 --max-images 400 --work-dir /tmp/tag2text_gpu_benchmark \
    > "$RESULTS/benchmark_table.md" 2> "$RESULTS/benchmark.log"
benchmark_status=$?
[ "$benchmark_status" -eq 0 ] || tail -n 30 "$RESULTS/benchmark.log" >&2

# -- the one table --------------------------------------------------------------------------------------------
{
    echo
    echo "## GPU check ($(( $(date +%s) - started )) s)"
    echo
    cat "$RESULTS/environment.txt"
    echo
    echo "GPU tests (tests/test_gpu.py): ${tests_line:-no pytest summary (exit $tests_status)}"
    echo
    if [ "$benchmark_status" -eq 0 ]; then
        grep -E '^(\||[0-9]+ images)' "$RESULTS/benchmark_table.md"
    else
        echo "benchmark failed (exit $benchmark_status): $(tail -n 1 "$RESULTS/benchmark.log")"
    fi
} | tee "$RESULTS/gpu_check.md"
[ "$tests_status" -eq 0 ] && [ "$benchmark_status" -eq 0 ]
