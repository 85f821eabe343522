"""``instanseg-scnp``: the command line, a thin layer over the library.

The only module that parses arguments, configures logging and turns errors into
exit codes. The ``train`` flags are generated from :class:`TrainConfig`'s
fields, so their defaults and help are defined once, there.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from instanseg_scnp._files import read_json
from instanseg_scnp._logs import PACKAGE_LOGGER, send_package_logs
from instanseg_scnp._options import (
    DEPRECATED_MODES,
    DEPRECATED_TARGETS,
    EXPORT_FORMATS,
    MASK_LOSSES,
    SCNP_TARGETS,
    SEED_LOSSES,
)
from instanseg_scnp.data import DATA_DIR_ENV, DATASETS, SPLITS
from instanseg_scnp.rundir import BIOIMAGEIO
from instanseg_scnp.experiment import SET_BY_EXPERIMENT
from instanseg_scnp.training.config import TrainConfig
from instanseg_scnp.training.presets import PRESETS

logger = logging.getLogger(PACKAGE_LOGGER)

_CHOICES = {"seed_loss": SEED_LOSSES, "mask_loss": MASK_LOSSES}
_DEPRECATED = {"scnp": DEPRECATED_TARGETS, "scnp_mode": DEPRECATED_MODES}
"""Old spellings the flags still take (with a warning), not shown in --help."""
USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError)
"""Errors that are the input's fault: shown as one line, exit status 2 (with ``-v``, the traceback)."""


def _window(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        removed = " ('auto' was removed: the SCNP authors use 3 for InstanSeg)" if text == "auto" else ""
        raise argparse.ArgumentTypeError(f"expected an odd int, got {text!r}{removed}") from None


def _preset_default(name: str, default: object) -> str:
    """The default shown in --help: the field's own, or each preset's value."""
    if name == "preset":
        return "demo for --data synthetic, else upstream"
    if default is not None or name not in PRESETS["demo"]:
        return _shown(default)
    shown = {preset: _shown(values[name]) for preset, values in PRESETS.items()}
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return ", ".join(f"{preset} {value}" for preset, value in shown.items())


def _shown(value: object) -> str:
    """A default as it is typed on the command line: ``(16, 32)`` -> ``16 32``."""
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _add_config_flags(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field but ``exclude``; an absent flag keeps the field's default (or the preset's)."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        hint = _without_none(hints[field.name])
        example = PRESETS["demo"].get(field.name, field.default)
        options: dict = {"default": argparse.SUPPRESS, "dest": field.name}
        if field.name == "layers":
            options.update(nargs="+", type=int, metavar="WIDTH")
        elif field.name == "scnp_window":
            options.update(type=_window, metavar="ODD_INT")
        elif hint is bool:
            options.update(action=argparse.BooleanOptionalAction)
        elif typing.get_origin(hint) is typing.Literal:
            choices = typing.get_args(hint)
            options.update(choices=(*choices, *_DEPRECATED.get(field.name, ())),
                           metavar="{" + ",".join(choices) + "}")
        elif field.name in _CHOICES:
            options.update(choices=_CHOICES[field.name], metavar="NAME")
        elif field.name == "out":
            options.update(type=Path, metavar="RUN_DIR")
        elif field.name == "data_root":
            options.update(type=str, metavar="DIR")
        elif field.name == "pixel_size":
            options.update(type=float, metavar="UM")
        elif field.name == "init":
            options.update(type=str, metavar="MODEL")
        else:
            options.update(type=type(example))
        shown = _preset_default(field.name, field.default)
        parser.add_argument(flag, help=f"{field.metadata['help']} (default: {shown})", **options)


def _without_none(hint: object) -> object:
    """``X | None`` -> ``X``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arguments = [a for a in typing.get_args(hint) if a is not type(None)]
        return arguments[0] if len(arguments) == 1 else hint
    return hint


def _add_compare_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", default=None, metavar="SETTING",
                        help="the setting every other one is compared with, named as in the report "
                             "(default: for each SCNP setting, the SCNP-off setting with an otherwise equal config)")
    parser.add_argument("--allow-different", nargs="+", default=[], metavar="FIELD",
                        help="config fields in which a setting may differ from its baseline besides the SCNP "
                             "options (default: none)")


def _add_output_flags(parser: argparse.ArgumentParser, default: Path | None, shown: str) -> None:
    parser.add_argument("--output", type=Path, default=default, help=f"folder to write (default: {shown})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder (default: refuse)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instanseg-scnp",
        description="Train, export and evaluate InstanSeg cell models with SCNP (Same-Class Neighbor Penalization).",
    )
    common = argparse.ArgumentParser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug messages (default: off)")
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="warnings and errors only, no progress bars: for logs (default: off)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", parents=[common],
        help="train a model (default: on the built-in synthetic data, a few minutes on a CPU)",
        description="Train an InstanSeg model with SCNP, export the best epoch to RUN_DIR/instanseg.pt and "
                    "evaluate it on the test split. Runs data-parallel under torchrun.")
    _add_config_flags(train)
    train.add_argument("--config", type=Path, metavar="FILE", default=None,
                       help="take the settings from FILE: a run's config.json (to repeat the run) or a .toml file "
                            "of the same keys; flags given as well replace its values, and the preset fills in "
                            "what neither gives (default: flags and preset only)")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", default=None,
                       help="continue RUN_DIR from its last checkpoint with its own config "
                            "(only --device and --workers may change) (default: start a new run)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace an existing, non-empty --out directory (default: refuse)")
    train.add_argument("--allow-changed-data", action="store_true",
                       help="with --resume: continue even though the dataset file changed since the run started "
                            "(default: refuse)")
    train.set_defaults(func=_train)

    export = commands.add_parser(
        "export", parents=[common], help="export a run's model to TorchScript or a bioimage.io package",
        description="Export RUN_DIR's best weights (model_weights.pth) to upstream InstanSeg's TorchScript format, "
                    "or RUN_DIR's exported model as a bioimage.io package (for QuPath's InstanSeg extension and the "
                    "bioimage.io model zoo; needs: pip install 'instanseg-scnp[bioimageio]').")
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="torchscript",
                        help="torchscript: upstream's .pt file; bioimageio: a package folder, or a .zip file when "
                             "--output ends in .zip (default: torchscript)")
    export.add_argument("--output", type=Path, default=None,
                        help="what to write (default: RUN_DIR/instanseg.pt, or RUN_DIR/bioimageio for a package)")
    export.add_argument("--author", action="append", default=None, metavar="NAME",
                        help="a package author, repeatable, for bioimageio (default: your login name)")
    export.add_argument("--license", default="Apache-2.0",
                        help="SPDX licence of the package's model, for bioimageio (default: Apache-2.0)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output (default: refuse)")
    export.set_defaults(func=_export)

    evaluate = commands.add_parser(
        "evaluate", parents=[common], help="evaluate a run's exported model on a dataset split",
        description="Run RUN_DIR/instanseg.pt through upstream InstanSeg inference on a split and write "
                    "per_image.csv, per_cell.csv, summary.json and evaluation.png. (Training already "
                    "evaluates on its test split, in RUN_DIR/evaluation.)")
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    evaluate.add_argument("--data", default=None, help="'synthetic' or an InstanSeg .pth dataset (default: the run's)")
    evaluate.add_argument("--split", default="Test", choices=SPLITS, help="which split (default: Test)")
    _add_output_flags(evaluate, None, "RUN_DIR/evaluation-<data>-<split>")
    evaluate.set_defaults(func=_evaluate)

    compare = commands.add_parser(
        "compare", parents=[common], help="compare runs: each SCNP setting against its baseline, paired by seed",
        description="Group runs into settings (runs that differ only in --seed, --out, --device, --workers, "
                    "--data-root, --preset or --log are one setting), pair each SCNP setting's runs with its "
                    "baseline's by seed and test image, and print a Markdown report: mean ± std over seeds, and the "
                    "paired differences with 95% bootstrap CIs (bold only where the CI excludes 0). Writes "
                    "comparison.md, runs.csv, per_image.csv, paired.csv, comparison.png, and the validation "
                    "curves (epochs.csv, curves.png).")
    compare.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="finished run directories")
    _add_compare_flags(compare)
    _add_output_flags(compare, Path("comparison"), "comparison")
    compare.set_defaults(func=_compare)

    experiment = commands.add_parser(
        "experiment", parents=[common], help="train SCNP settings × windows × seeds side by side, then compare",
        description="Train one run per SCNP target (--settings), window (--windows) and seed (--seeds) in "
                    "OUT/<setting>-s<seed>, --jobs at a time, each in its own process (log: OUT/logs/), then "
                    "compare them all into OUT/comparison. Stopped and started again with the same flags, it keeps "
                    "finished runs and resumes interrupted ones. Every train flag passes through to every run.")
    experiment.add_argument("--out", type=Path, default=Path("runs/experiment"), metavar="DIR",
                            help="experiment folder (default: runs/experiment)")
    experiment.add_argument("--settings", nargs="+", choices=SCNP_TARGETS, default=list(SCNP_TARGETS),
                            metavar="TARGET", help="SCNP targets to train; off is the baseline "
                                                   f"(default: {' '.join(SCNP_TARGETS)})")
    experiment.add_argument("--seeds", type=int, default=5, metavar="N", help="seeds 0 .. N-1 per setting (default: 5)")
    experiment.add_argument("--windows", type=_window, nargs="+", default=[3], metavar="ODD_INT",
                            help="SCNP windows: several make a window sweep; the baseline runs once per seed "
                                 "(default: 3)")
    experiment.add_argument("--jobs", type=int, default=1, metavar="N",
                            help="runs trained side by side; on a CPU each gets cores/N threads (default: 1)")
    _add_config_flags(experiment, exclude=SET_BY_EXPERIMENT)
    experiment.set_defaults(func=_experiment)

    prepare = commands.add_parser(
        "prepare", parents=[common], help="download, verify and convert IHC_TMA, LyNSeC or NuInsSeg for training",
        description="Download a public dataset from its Zenodo record (or take the archive you downloaded), verify "
                    "it, convert it to InstanSeg's format in ROOT/NAME/ and print its report: images per split, "
                    "nuclei per image, image sizes, median nucleus diameter, "
                    "skipped files. Then: instanseg-scnp train --data NAME --data-root ROOT. A dataset already "
                    "prepared is not prepared again. With --check DIR, only validate and report.")
    prepare.add_argument("dataset", nargs="?", choices=[*DATASETS, "all"], metavar="{" + ",".join(DATASETS) + ",all}",
                         help="the dataset to prepare, or all three")
    prepare.add_argument("--root", type=Path, default=None, metavar="DIR",
                         help=f"data root to prepare in (default: ${DATA_DIR_ENV}, else ~/.cache/instanseg-scnp)")
    prepare.add_argument("--from-archive", type=Path, default=None, metavar="PATH",
                         help="the dataset's archive, downloaded by hand: verified and used instead of downloading "
                              "(default: download it)")
    prepare.add_argument("--base-url", default=None, metavar="URL",
                         help="download URL/<archive name> from this mirror instead (default: "
                              "$INSTANSEG_SCNP_BASE_URL, else the Zenodo record)")
    prepare.add_argument("--retries", type=int, default=3, metavar="N",
                         help="further download attempts after a failed one (default: 3)")
    prepare.add_argument("--check", type=Path, default=None, metavar="DIR",
                         help="only validate the prepared dataset in DIR (a folder, a .pth file or a dataset name "
                              "under --root) and print its report (default: prepare)")
    prepare.set_defaults(func=_prepare)
    return parser


def _train(args: argparse.Namespace) -> int:
    from instanseg_scnp.training import TrainingDiverged, resume, train

    settings = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)
                if hasattr(args, field.name)}
    if args.resume is not None and args.overwrite:
        raise ValueError("--resume continues a run; it cannot be combined with --overwrite")
    if args.allow_changed_data and args.resume is None:
        raise ValueError("--allow-changed-data only applies with --resume")
    if args.resume is not None and args.config is not None:
        raise ValueError("--resume continues a run with its own config; it cannot be combined with --config")
    try:
        if args.resume is not None:
            result = resume(args.resume, progress=not args.quiet, allow_changed_data=args.allow_changed_data,
                            **settings)
        elif args.config is not None:  # the file's settings, replaced by the flags given
            result = train(TrainConfig.from_file(args.config, **settings), overwrite=args.overwrite,
                           progress=not args.quiet)
        else:
            result = train(overwrite=args.overwrite, progress=not args.quiet, **settings)
    except TrainingDiverged as error:  # not the input's fault as such: exit status 1
        if args.verbose:
            raise
        print(f"instanseg-scnp train: error: {error}", file=sys.stderr)
        return 1
    print(result.model_path)
    return 0


def _export(args: argparse.Namespace) -> int:
    from instanseg_scnp.upstream import export_bioimageio, export_run

    if args.format == "bioimageio":
        print(export_bioimageio(args.run_dir, args.output or args.run_dir / BIOIMAGEIO, authors=args.author or (),
                                license=args.license, overwrite=args.overwrite))
    else:
        print(export_run(args.run_dir, args.output, overwrite=args.overwrite))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from instanseg_scnp.evaluation import evaluate_run, summary_line

    folder = evaluate_run(args.run_dir, data=args.data, split=args.split, output=args.output,
                          overwrite=args.overwrite, progress=not args.quiet)
    logger.info("%s", summary_line(read_json(folder / "summary.json")))
    print(folder)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from instanseg_scnp.comparison import compare_runs

    folder, markdown = compare_runs(args.run_dirs, args.output, baseline=args.baseline,
                                    allow_different=tuple(args.allow_different), overwrite=args.overwrite)
    print(markdown, end="")
    logger.info("wrote %s", folder)
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from instanseg_scnp.experiment import ExperimentError, run_experiment

    settings = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)
                if hasattr(args, field.name) and field.name not in SET_BY_EXPERIMENT}
    try:
        folder, markdown = run_experiment(args.out, targets=args.settings, seeds=args.seeds, windows=args.windows,
                                          jobs=args.jobs, progress=not args.quiet, **settings)
    except ExperimentError as error:
        print(f"instanseg-scnp experiment: error: {error}", file=sys.stderr)
        return 1
    print(markdown, end="")
    logger.info("wrote %s", folder)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from instanseg_scnp.data import DownloadError, check_dataset, prepare_dataset

    if args.check is not None:
        if args.dataset or args.from_archive or args.base_url:
            raise ValueError("--check DIR only validates a prepared dataset; it takes no dataset name, "
                             "--from-archive or --base-url")
        print(check_dataset(args.check, root=args.root).to_text())
        return 0
    if args.dataset is None:
        raise ValueError(f"name the dataset to prepare ({', '.join(DATASETS)} or all), or pass --check DIR")
    names = DATASETS if args.dataset == "all" else (args.dataset,)
    if args.from_archive is not None and len(names) > 1:
        raise ValueError("--from-archive is one dataset's archive: name that dataset instead of 'all'")
    for name in names:
        try:
            report = prepare_dataset(name, args.root, from_archive=args.from_archive, base_url=args.base_url,
                                     retries=args.retries, progress=not args.quiet)
        except DownloadError as error:  # the network's fault, not the input's: exit status 1
            if args.verbose:
                raise
            print(f"instanseg-scnp prepare: error: {error}", file=sys.stderr)
            return 1
        print(report.to_text())
    return 0


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: one rank reports
        level = max(level, logging.WARNING)
    send_package_logs(logging.StreamHandler(sys.stderr), level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose, args.quiet)
    try:
        return args.func(args)
    except USER_ERRORS as error:
        if args.verbose:
            raise
        print(f"instanseg-scnp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (OSError, ImportError) as error:  # the machine's (a full disk, a missing extra): one line, exit status 1
        if args.verbose:
            raise
        print(f"instanseg-scnp {args.command}: error: {error}", file=sys.stderr)
        return 1
