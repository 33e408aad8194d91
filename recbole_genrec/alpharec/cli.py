"""Command lines of AlphaRec's experiments: zero-shot transfer and user intention queries.

    python -m recbole_genrec.alpharec.cli zeroshot --source=amazon-beauty --target=ml-100k [...]
    python -m recbole_genrec.alpharec.cli intention --dataset=ml-100k --genres Horror Comedy [...]

The library functions are in :mod:`recbole_genrec.alpharec.zeroshot` and
:mod:`recbole_genrec.alpharec.intention`.
"""

import argparse
import sys


def zeroshot_main(argv=None):
    """``python -m recbole_genrec.alpharec.cli zeroshot --source=... --target=...``."""
    import yaml

    import recbole_genrec  # noqa: F401  (compat shims)
    from recbole_genrec.cli import parse_config_overrides

    parser = argparse.ArgumentParser(description="AlphaRec zero-shot transfer")
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint that is not plain data (runs code from the file)")
    parser.add_argument("--config_files", nargs="*", default=None)
    parser.add_argument("--source_epochs", type=int, default=None)
    parser.add_argument("--target_eval_args", default=None, help="YAML dict for the target's eval_args")
    args, extra = parser.parse_known_args(argv)
    config_dict = parse_config_overrides(extra)
    if args.trust_checkpoint:
        config_dict["trust_checkpoint"] = True
    source_dict = {"epochs": args.source_epochs} if args.source_epochs else {}
    target_dict = {"eval_args": yaml.safe_load(args.target_eval_args)} if args.target_eval_args else {}
    sys.argv = sys.argv[:1]  # the options were parsed here; keep RecBole's Config from re-reading them
    from recbole_genrec.alpharec.zeroshot import format_table, zero_shot

    rows, info = zero_shot(args.source, args.target, args.checkpoint, args.config_files, config_dict,
                           source_dict, target_dict)
    print(f"source: {info['source']}  target: {info['target']}  checkpoint: {info['checkpoint']}")
    if "source_test" in info:
        print(f"source test: {info['source_test']}")
    print(format_table(rows))
    return rows, info


def intention_main(argv=None):
    """``python -m recbole_genrec.alpharec.cli intention --dataset=... --genres ...``."""
    import recbole_genrec  # noqa: F401  (compat shims)
    from recbole_genrec.cli import parse_config_overrides

    parser = argparse.ArgumentParser(description="AlphaRec user intention queries")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--genres", nargs="+", default=["Horror", "Comedy", "Romance", "Sci-Fi", "Documentary"])
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--field", default="class")
    parser.add_argument("--query_template", default="{genre} movies")
    parser.add_argument("--checkpoint", default=None, help="a RecBole checkpoint of AlphaRec (else train one)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint that is not plain data (runs code from the file)")
    parser.add_argument("--config_files", nargs="*", default=None)
    args, extra = parser.parse_known_args(argv)
    config_dict = parse_config_overrides(extra)
    if args.trust_checkpoint:
        config_dict["trust_checkpoint"] = True
    sys.argv = sys.argv[:1]  # the options were parsed here; keep RecBole's Config from re-reading them
    from recbole_genrec.alpharec.intention import format_table, genre_share, load_or_train

    model, train_dataset = load_or_train(args.dataset, args.checkpoint, args.config_files, config_dict)
    rows = genre_share(model, train_dataset, args.genres, alpha=args.alpha, topk=args.topk, field=args.field,
                       query_template=args.query_template)
    print(format_table(rows, args.topk, args.alpha))
    return rows


COMMANDS = {"zeroshot": zeroshot_main, "intention": intention_main}


def main(argv=None):
    """Errors are one line with exit code 2 (as in ``run_recbole_genrec.py``); ``--debug`` adds the traceback."""
    from recbole_genrec.cli import EXPECTED, UsageError, _fail, _one_line

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m recbole_genrec.alpharec.cli {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    try:
        COMMANDS[argv[0]](argv[1:])
    except UsageError as err:
        return _fail(err.code, debug)
    except EXPECTED as err:
        return _fail(_one_line(err), debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
