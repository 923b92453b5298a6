"""The ``kerax`` command: train, evaluate, predict and inspect models from config files.

    kerax train [CONFIG] [--set fit.epochs=3 ...] [--output-dir DIR] [--resume MODE]
    kerax evaluate MODEL [CONFIG]
    kerax predict MODEL INPUT.npy -o OUT.npy
    kerax summary CONFIG|MODEL
    kerax config show|validate CONFIG

CONFIG is a YAML file or the name of a shipped config (``kerax config list``); with none,
``train`` runs ``digits_cnn``. Exit codes: 0 done, 1 the run failed, 2 bad usage, config
or input file, 143 stopped by SIGTERM after saving a checkpoint (run again with
``--resume`` to continue). User errors print one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGTERM = 0, 1, 2, 143


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    common.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                           metavar="KEY=VALUE", help="override config keys, e.g. fit.epochs=3 "
                           "compile.optimizer.learning_rate=0.01")

    p = argparse.ArgumentParser(prog="kerax", description="Train and use kerax models from config files.",
                                epilog="Run 'kerax COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"kerax {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", parents=[common, overrides], help="train a model from a config",
                       description="Train the model a config describes; write the model, history, "
                       "metrics and curves.png to the output directory.")
    t.add_argument("config", nargs="?", help="YAML file or shipped config name (default: digits_cnn)")
    t.add_argument("-o", "--output-dir", help="where the run's files go (default: runs/<name>-<time>)")
    t.add_argument("--resume", nargs="?", const="auto", choices=("auto", "required", "never"),
                   help="continue from the checkpoint in OUTPUT_DIR/backup: auto (default: if there "
                   "is one), required (fail if none), never (start over)")
    t.add_argument("--devices", type=int, help="data-parallel over this many local devices")
    t.add_argument("--seed", type=int, help="the seed for weights, shuffling and dropout")
    t.add_argument("--debug-nans", action="store_true", help="raise at the first NaN inside a jitted function")

    e = sub.add_parser("evaluate", parents=[common, overrides], help="evaluate a saved model on a config's test data")
    e.add_argument("model", help="a .kerax model file")
    e.add_argument("config", nargs="?", help="config naming the data (default: config.yaml beside the model)")

    pr = sub.add_parser("predict", parents=[common], help="run a saved model on inputs from a .npy file")
    pr.add_argument("model", help="a .kerax model file")
    pr.add_argument("inputs", help="a .npy array of inputs, batch first")
    pr.add_argument("-o", "--output", required=True, help="where to write the outputs (.npy)")
    pr.add_argument("--batch-size", type=int, default=256)

    s = sub.add_parser("summary", parents=[common, overrides], help="print a model's layers, shapes and parameter counts")
    s.add_argument("target", help="a config (file or shipped name) or a .kerax model file")

    c = sub.add_parser("config", parents=[common], help="show, check or list configs")
    csub = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("show", "print a config with defaults and overrides applied"),
                       ("validate", "check a config, including its model section")):
        a = csub.add_parser(name, parents=[common, overrides], help=text)
        a.add_argument("config", help="YAML file or shipped config name")
    csub.add_parser("list", parents=[common], help="list the shipped configs")
    return p


def _version() -> str:
    from kerax import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns its exit code."""
    args = _parser().parse_args(argv)  # exits 2 with a usage message on bad arguments
    try:
        return _dispatch(args)
    except BaseException as e:  # noqa: BLE001 - every failure becomes a one-line message and a code
        if isinstance(e, SystemExit):
            raise
        if args.debug or not _expected(e):  # kerax's own failures: the traceback helps a report
            import traceback

            traceback.print_exc()
        code = _exit_code(e)
        label = "stopped" if code == EXIT_SIGTERM else "error"
        print(f"kerax {args.command}: {label}: {_message(e)}", file=sys.stderr)
        return code


def _expected(e: BaseException) -> bool:
    """Errors about the user's input or run, explained by their message alone."""
    from kerax import errors
    from kerax.experiments.preemption import Preempted

    return isinstance(e, (errors.KeraxError, FileNotFoundError, Preempted, KeyboardInterrupt))


def _is_user_error(e: BaseException) -> bool:
    from kerax import errors

    return isinstance(e, FileNotFoundError) or (
        isinstance(e, errors.KeraxError) and isinstance(e, (ValueError, TypeError)))


def _exit_code(e: BaseException) -> int:
    from kerax.experiments.preemption import Preempted

    if isinstance(e, Preempted):
        return EXIT_SIGTERM
    if isinstance(e, KeyboardInterrupt):
        return 130
    if _is_user_error(e):
        return EXIT_USAGE
    return EXIT_FAILED


def _message(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) < 2000 else text[:2000] + "..."


def _dispatch(args: argparse.Namespace) -> int:
    command = {"train": _train, "evaluate": _evaluate, "predict": _predict, "summary": _summary,
               "config": _config}[args.command]
    if not getattr(args, "debug_nans", False):
        return command(args)
    import jax

    # Process-wide for the command, restored after, for callers of main that go on.
    before = jax.config.jax_debug_nans
    jax.config.update("jax_debug_nans", True)
    try:
        return command(args)
    finally:
        jax.config.update("jax_debug_nans", before)


def _say(args: argparse.Namespace):
    return (lambda _: None) if args.quiet else print


def _train(args: argparse.Namespace) -> int:
    from kerax.experiments import runner
    from kerax.experiments.preemption import Preempted, sigterm_flag

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    config = runner.read_config(args.config, overrides)
    say = _say(args)
    with sigterm_flag() as stop:
        try:
            run = runner.train(config, output_dir=args.output_dir, resume=args.resume or "auto",
                               announce=args.resume is not None,
                               devices=args.devices, verbose=0 if args.quiet else "auto", stop_event=stop,
                               log=say)
        except Preempted as e:  # config.yaml in the run's directory holds the overrides too
            out = os.path.dirname(e.backup_dir)
            again = f"kerax train {os.path.join(out, 'config.yaml')} --output-dir {out} --resume"
            raise Preempted(e.step, f"{e.backup_dir}; continue with: {again}") from None
    _print_metrics(run.test_metrics)
    if run.privacy is not None and not run.privacy_printed:
        print(run.privacy)
    say(f"saved the model, history, metrics and curves.png in {run.output_dir}")
    return EXIT_OK


def _print_metrics(metrics: dict) -> None:
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}")


def _evaluate(args: argparse.Namespace) -> int:
    from kerax import load_model
    from kerax.experiments import datasources, runner

    config_arg = args.config or os.path.join(os.path.dirname(os.path.abspath(args.model)), "config.yaml")
    if args.config is None and not os.path.isfile(config_arg):
        raise FileNotFoundError(f"no config given and none beside the model ({config_arg}); "
                                "pass the config that names the data: kerax evaluate MODEL CONFIG")
    config = runner.read_config(config_arg, args.overrides)
    model = load_model(args.model)
    data = datasources.load(config["data"])
    result = model.evaluate(data.x_test, data.y_test, batch_size=config["fit"]["batch_size"],
                            verbose=0, return_dict=True)
    _print_metrics({f"test_{k}": float(v) for k, v in result.items()})
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from kerax import errors, load_model
    from kerax.experiments import runner

    if args.batch_size < 1:
        raise errors.ConfigError(f"--batch-size: expected an integer >= 1; found {args.batch_size}")
    model = load_model(args.model)
    x = runner.load_inputs(args.inputs)
    y = model.predict(x, batch_size=args.batch_size, verbose=0)
    if not isinstance(y, np.ndarray):
        raise errors.ConfigError(f"{args.model}: the model has several outputs; predict writes one "
                                 ".npy array (use the Python API for multi-output models)")
    np.save(args.output, y)
    _say(args)(f"wrote {y.shape} {y.dtype} outputs to {args.output}")
    return EXIT_OK


def _summary(args: argparse.Namespace) -> int:
    from kerax import load_model
    from kerax.experiments import datasources, runner

    if args.target.endswith(".kerax") or _is_zip(args.target):
        model = load_model(args.target, compile=False)
    else:
        config = runner.read_config(args.target, args.overrides)
        data = datasources.load(config["data"])
        model = runner.build_model(config["model"], data.info)
        if not model.built:
            model.build(data.x_train[:1].shape)
    model.summary()
    return EXIT_OK


def _is_zip(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _config(args: argparse.Namespace) -> int:
    import yaml

    from kerax.experiments import datasources, runner

    if args.action == "list":
        for name, path in runner.builtin_configs().items():
            print(f"{name:20s} {path}")
        return EXIT_OK
    config = runner.read_config(args.config, args.overrides)
    if args.action == "show":
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return EXIT_OK
    data = datasources.load(config["data"])
    model = runner.build_model(config["model"], data.info)
    # The compile section too (optimizer, loss, metrics, dp); not the devices, which belong
    # to the machine that will train.
    runner.compile_model(model, {**config, "distribute": None}, None)
    print(f"{args.config}: ok")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
