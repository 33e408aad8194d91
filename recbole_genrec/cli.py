"""Command line of ``run_recbole_genrec.py`` (same flags as RecBole's ``run_recbole.py``).

Extra: ``--list-models`` and a comma-separated ``--model=SASRec,BPR,NGCF`` that trains each
model in turn on one dataset/split and prints one comparison table. Any ``--key=value`` is a
config override, read by RecBole's ``Config`` from the command line as usual; lists and dicts may
be written in Python (``--metrics="['Recall','NDCG']"``) or YAML (``--metrics=[Recall,NDCG]``).
"""

import argparse
import sys


def parse_config_overrides(extra):
    """``["--key=value", ...]`` -> ``{key: value}`` with YAML values (``--topk=[10,20]``,
    ``--metrics=[Recall,NDCG]``), for the stand-alone entry points (zero-shot, intention); anything
    else is rejected with the expected form."""
    import yaml

    out = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg:
            raise SystemExit(f"unrecognised argument {arg!r} (use --key=value for config keys)")
        key, value = arg[2:].split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def python_literal_overrides(argv):
    """RecBole reads ``--key=value`` from ``sys.argv`` and evaluates the value as Python, so the YAML
    spelling of a list (``--metrics=[Recall,NDCG]``) fails there and silently stays a string. Such
    values (a list or dict in YAML that is no Python literal) are rewritten as Python literals
    (``--metrics=['Recall', 'NDCG']``); everything else is passed through unchanged."""
    import ast

    import yaml

    out = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            if value.strip()[:1] in ("[", "{"):
                try:
                    ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    try:
                        parsed = yaml.safe_load(value)
                    except yaml.YAMLError:
                        parsed = None
                    if isinstance(parsed, (list, dict)):
                        arg = f"--{key}={parsed!r}"
        out.append(arg)
    return out


def _print_models():
    from recbole_genrec.utils import list_models

    for package, groups in list_models().items():
        print(f"{package}:")
        for group, names in groups.items():
            print(f"  {group}: {', '.join(names)}")


def build_parser():
    parser = argparse.ArgumentParser(prog="run_recbole_genrec.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", "-m", type=str, default="BPR", help="model name, or several separated by commas")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", type=str, default=None, help="config files, separated by spaces")
    parser.add_argument("--list-models", action="store_true", help="list plugin and RecBole models and exit")
    parser.add_argument("--nproc", type=int, default=1, help="number of processes")
    parser.add_argument("--ip", type=str, default="localhost", help="the ip of master node")
    parser.add_argument("--port", type=str, default="5678", help="the port of master node")
    parser.add_argument("--world_size", type=int, default=-1, help="total number of jobs")
    parser.add_argument("--group_offset", type=int, default=0, help="the global rank offset of this group")
    parser.add_argument("--results_dir", type=str, default=None, help="folder for side-by-side tables")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, _ = build_parser().parse_known_args(argv)
    if args.list_models:
        _print_models()
        return 0
    import recbole_genrec  # noqa: F401  (applies the compat shims before RecBole is used)
    from recbole_genrec.quick_start import run, run_side_by_side

    config_file_list = args.config_files.strip().split(" ") if args.config_files else None
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    saved_argv = sys.argv
    sys.argv = sys.argv[:1] + python_literal_overrides(argv)  # RecBole's Config reads the overrides from here
    try:
        if len(models) > 1:
            if args.nproc > 1 or args.world_size > 0:
                raise ValueError("side-by-side runs (--model=A,B) are single-process; drop --nproc")
            run_side_by_side(models, args.dataset, config_file_list, results_dir=args.results_dir)
        else:
            run(models[0], args.dataset, config_file_list=config_file_list, nproc=args.nproc,
                world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset)
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"run_recbole_genrec.py: error: {message}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv
    return 0


if __name__ == "__main__":
    sys.exit(main())
