"""`ortserve train digits-resnet|digits-lstm|digits-gru --out PATH`: train a bundled digits recipe offline."""

from __future__ import annotations

import argparse
import logging
import sys

from ortserve.export.recipes import digits

RECIPES = ("digits-resnet", "digits-lstm", "digits-gru")
# Options that only make sense for the image model.
_RESNET_ONLY = ("freeze_backbone", "init_checkpoint", "image_size")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ortserve train",
        description="Train a model on scikit-learn's bundled digits (offline) and save a plain state_dict "
        "with a JSON sidecar (<out>.json) holding held-out accuracy, factory and kwargs.",
    )
    parser.add_argument("recipe", choices=RECIPES, help="which model to train")
    parser.add_argument("--out", required=True, help="where to write the state_dict (.pt)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init and shuffling (default: 0)")
    parser.add_argument(
        "--freeze-backbone",
        action="store_true",
        default=None,
        help="digits-resnet: train only `fc`, keeping the rest (and its BatchNorm statistics) fixed",
    )
    parser.add_argument("--init-checkpoint", default=None, help="digits-resnet: state_dict to start from")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"digits-resnet: side the 8x8 digits are resized to (default: {digits.DEFAULT_IMAGE_SIZE})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.recipe != "digits-resnet":
        misplaced = [name for name in _RESNET_ONLY if getattr(args, name) is not None]
        if misplaced:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in misplaced)
            parser.error(f"{flags} only applies to digits-resnet, not {args.recipe}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.image_size is not None and args.image_size < 1:
        parser.error(f"--image-size must be >= 1, got {args.image_size}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # torch loads only once a recipe is chosen (argparse errors and --help stay instant).
    from ortserve.export.recipes import train

    options: dict[str, object] = {"seed": args.seed, "progress": not args.no_progress}
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.recipe == "digits-resnet":
        result = train.train_digits_resnet(
            args.out,
            freeze_backbone=bool(args.freeze_backbone),
            init_checkpoint=args.init_checkpoint,
            image_size=args.image_size or digits.DEFAULT_IMAGE_SIZE,
            **options,
        )
    else:
        result = train.train_digits_sequence(args.out, cell=args.recipe.removeprefix("digits-"), **options)
    sys.stdout.write(result.summary() + "\n")
    return 0
