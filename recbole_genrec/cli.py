"""Command line of ``run_recbole_genrec.py`` (same flags as RecBole's ``run_recbole.py``).

Extra: ``--list_models``, a comma-separated ``--model=SASRec,BPR,NGCF`` that trains each model in turn on one
dataset/split under one shared protocol and prints one comparison table, ``--trust_checkpoint`` (see
:mod:`recbole_genrec.checkpoint`) and ``--debug`` (tracebacks). Flags are written with underscores, as RecBole's
and the config keys are; the hyphenated spellings (``--list-models``) are accepted too. ``--config_files`` takes
one or more paths, as separate arguments or space-separated in one (RecBole's form), in every command line. Any ``--key=value`` is a config override, parsed
here, never ``eval``'d: a Python literal (``--metrics="['Recall','NDCG']"``, ``--learning_rate=1e-3``) or YAML
(``--metrics=[Recall,NDCG]``); anything else stays a string. The overrides reach RecBole as a config dict, with
``sys.argv`` emptied so that RecBole's own command-line parser (which ``eval``s) reads nothing.

``--help``, ``--list_models`` and the checks of :func:`recbole_genrec.validation.check_command_line` (model,
dataset, metric and key names, with the closest names; values) answer before torch or RecBole is imported. Errors
are one line (what is wrong and the fix) with exit code 2; ``--debug`` adds the traceback. Every warning of a run
is repeated in a short summary at its end (:mod:`recbole_genrec.runlog`).
"""

import argparse
import ast
import logging
import sys

from recbole_genrec.errors import ColdStartLeak

PROG = "run_recbole_genrec.py"
EXPECTED = (ValueError, FileNotFoundError, KeyError, NotImplementedError, ColdStartLeak)


class UsageError(SystemExit):
    """A command-line argument that cannot be used (its message says which and how to fix it)."""


def parse_value(text, name="the value"):
    """``--key=value`` text -> a Python literal, else a YAML value, else the string itself (never ``eval``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    import yaml

    from recbole_genrec.safety import yaml_value

    try:
        return yaml_value(text, name)  # plain data; too deep or self-referencing: SafetyError
    except yaml.YAMLError:
        return text


def parse_config_overrides(extra):
    """``["--key=value", ...]`` -> ``{key: value}`` (values by :func:`parse_value`: ``--topk=[10,20]``,
    ``--metrics=[Recall,NDCG]``); anything else raises :class:`UsageError` with the expected form."""
    from recbole_genrec.safety import check_value_nesting

    out = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg or not arg[2:].split("=", 1)[0]:
            raise UsageError(f"unrecognised argument {arg!r} (use --key=value for config keys; see --help)")
        key, value = arg[2:].split("=", 1)
        check_value_nesting(value, f"--{key}")  # before any parser recurses into it
        if key in out and out[key] != parse_value(value, f"--{key}"):
            raise UsageError(f"--{key} is given twice with different values; keep one")
        out[key] = parse_value(value, f"--{key}")
    return out


def _print_models():
    from recbole_genrec.model_index import static_list_models

    for package, groups in static_list_models().items():
        print(f"{package}:")
        for group, names in groups.items():
            print(f"  {group}: {', '.join(names)}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def add_config_files(parser):
    """``--config_files`` as every command line of the plugin takes it (read back with :func:`config_files`)."""
    parser.add_argument("--config_files", "--config-files", nargs="+", default=None, metavar="YAML",
                        help="yaml config files, later ones winning (separate arguments, or space-separated in one)")


def config_files(values):
    """``--config_files`` values -> a list of paths (``["a.yaml b.yaml"]`` -> ``["a.yaml", "b.yaml"]``), or None."""
    files = [f for value in values or [] for f in value.split()]
    return files or None


def build_parser():
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model", "-m", type=str, default="BPR", help="model name, or several separated by commas")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    add_config_files(parser)
    parser.add_argument("--list_models", "--list-models", action="store_true",
                        help="list plugin and RecBole models and exit")
    parser.add_argument("--nproc", type=int, default=1, help="number of processes")
    parser.add_argument("--ip", type=str, default="localhost", help="the ip of master node")
    parser.add_argument("--port", type=str, default="5678", help="the port of master node")
    parser.add_argument("--world_size", type=int, default=-1, help="total number of jobs")
    parser.add_argument("--group_offset", type=int, default=0, help="the global rank offset of this group")
    parser.add_argument("--results_dir", type=str, default=None, help="folder for side-by-side tables")
    parser.add_argument("--trust_checkpoint", "--trust-checkpoint", action="store_true",
                        help="load checkpoints that are not plain data (runs code from the file; only for your own)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return parser


def check_model_names(models):
    """Raise ``ValueError`` for a model name that neither package has (from the file scan: no imports), with the
    closest names, case-insensitive (``tiger`` -> ``TIGER``)."""
    from recbole_genrec.model_index import model_names
    from recbole_genrec.validation import closest

    known = sorted(model_names())
    for name in models:
        if name not in known:
            near = closest(name, known)
            hint = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
            raise ValueError(f"Unknown model '{name}' (names are case-sensitive); {hint}"
                             f"see `python {PROG} --list_models`")


def _one_line(err):
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    return " ".join(str(message).split())


def _prepare(argv):
    """Everything that needs no torch/RecBole: ``(args, models, config_dict)`` or an exit code."""
    args, extra = build_parser().parse_known_args(argv)
    if args.list_models:
        _print_models()
        return None
    from recbole_genrec.validation import check_command_line

    config_dict = parse_config_overrides(extra)
    if args.trust_checkpoint:
        config_dict["trust_checkpoint"] = True
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not models:
        raise UsageError("--model is empty; pass --model=<Name> (see --list_models)")
    check_model_names(models)
    args.settings = check_command_line(config_dict, config_files(args.config_files))
    if len(models) > 1 and (args.nproc > 1 or args.world_size > 0):
        raise UsageError("side-by-side runs (--model=A,B) are single-process; drop --nproc / --world_size")
    return args, models, config_dict


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        prepared = _prepare(argv)
        if prepared is None:
            return 0
        args, models, config_dict = prepared
        from recbole_genrec import runlog
        from recbole_genrec.validation import check_dataset_name

        check_dataset_name(args.dataset, args.settings.get("data_path"))  # a misspelt name, before any work

        runlog.quiet_known_warnings()  # as pyproject.toml's filterwarnings in the tests
        with runlog.collect_warnings() as messages:
            try:
                return _run(args, models, config_dict)
            finally:
                if messages:
                    print(runlog.warning_summary(messages), file=sys.stderr)
    except UsageError as err:
        if err.code in (0, None):  # --help
            return 0
        return _fail(err.code, debug)
    except EXPECTED as err:
        return _fail(_one_line(err), debug)


def _fail(message, debug):
    import traceback

    if debug or logging.getLogger().isEnabledFor(logging.DEBUG):
        traceback.print_exc()
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _run(args, models, config_dict):
    import recbole_genrec  # noqa: F401  (applies the compat shims before RecBole is used)
    from recbole_genrec.quick_start import run, run_side_by_side

    config_file_list = config_files(args.config_files)
    saved_argv = sys.argv
    sys.argv = sys.argv[:1]  # parsed above; RecBole's Config must not read (and eval) them again
    try:
        if len(models) > 1:
            run_side_by_side(models, args.dataset, config_file_list, config_dict, results_dir=args.results_dir)
        else:
            run(models[0], args.dataset, config_file_list=config_file_list, config_dict=config_dict,
                nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
                group_offset=args.group_offset)
    finally:
        sys.argv = saved_argv
    return 0


if __name__ == "__main__":
    sys.exit(main())
