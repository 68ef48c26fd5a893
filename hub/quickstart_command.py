"""``tag2text quickstart``: train a small model on built-in synthetic data and report (see
:mod:`tag2text.training.quickstart`)."""

from __future__ import annotations

import dataclasses
import os

from ..training.quickstart import QuickstartOptions
from .cli_args import UsageError, positive_float, positive_int

_DEFAULTS = QuickstartOptions()


def add_arguments(parser) -> None:
    add = parser.add_argument
    defaults = _DEFAULTS
    add("--output-dir", default=defaults.output_dir, help="where data, model and report go (default: %(default)s)")
    add("--train-images", type=positive_int, default=defaults.train_images,
        help="training images drawn (default: %(default)s)")
    add("--val-images", type=positive_int, default=defaults.val_images,
        help="held-out images for the loss curves and the tag thresholds (default: %(default)s)")
    add("--test-images", type=positive_int, default=defaults.test_images,
        help="held-out images of the final evaluation (default: %(default)s)")
    add("--max-steps", type=positive_int, default=defaults.max_steps,
        help="training steps; the result depends on them and on the seed, not on the machine (default: %(default)s)")
    add("--loss-weights", default=defaults.loss_weights,
        help="weights of the four losses (tagging twice the others: with equal weights the shared vision tower "
             "learned the objects' shapes far more slowly, measured) (default: %(default)s)")
    add("--batch-size", type=positive_int, default=defaults.batch_size,
        help="training batch size (default: %(default)s)")
    add("--learning-rate", type=positive_float, default=defaults.learning_rate,
        help="peak learning rate (default: %(default)s)")
    add("--time-budget-minutes", type=positive_float, default=defaults.time_budget_minutes,
        help="stop training when it has run this long (default: off; the summary's first line then says how many "
             "of the planned steps ran)")
    add("--seed", type=int, default=defaults.seed, help="seed of the data and the model (default: %(default)s)")
    add("--meteor", action="store_true", help="also compute METEOR (Java; ~15 s more)")
    add("--num-beams", type=positive_int, default=defaults.num_beams,
        help="beams of the evaluation captions (default: %(default)s)")


def check_arguments(args) -> None:
    from ..training.losses import LossWeights

    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UsageError(f"--output-dir {args.output_dir}: exists and is not a directory")
    try:
        LossWeights.parse(args.loss_weights, "batch")
    except ValueError as error:
        raise UsageError(f"--loss-weights {args.loss_weights}: {error}") from None


def run(args) -> int:
    from ..training.quickstart import format_report, run_quickstart

    check_arguments(args)
    options = QuickstartOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(QuickstartOptions)})
    report = run_quickstart(options)
    print(format_report(report))
    return 0
