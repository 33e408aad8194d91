"""Command lines of AlphaRec's experiments: zero-shot transfer and user intention queries.

    python -m recbole_genrec.alpharec.cli zeroshot --source=amazon-beauty --target=ml-100k [...]
    python -m recbole_genrec.alpharec.cli intention --dataset=ml-100k --genres Horror Comedy [...]

The library functions are in :mod:`recbole_genrec.alpharec.zeroshot` and
:mod:`recbole_genrec.alpharec.intention`.
"""

import argparse
import sys


PROG = "python -m recbole_genrec.alpharec.cli"
EPILOG = "Any other --key=value is a config override of every AlphaRec run (e.g. --epochs=20 --neg_num=256)."


def zeroshot_parser(parser=None):
    """The options of ``zeroshot`` (on ``parser``, e.g. a subcommand's, or a new one)."""
    from recbole_genrec.cli import add_config_files

    parser = parser or argparse.ArgumentParser(prog=f"{PROG} zeroshot", epilog=EPILOG)
    parser.description = ("AlphaRec zero-shot transfer: train on --source (or load --checkpoint), then evaluate on "
                          "--target with no training there, beside popularity and the source model's own test.")
    parser.add_argument("--source", required=True, help="dataset AlphaRec is trained on, e.g. amazon-beauty")
    parser.add_argument("--target", required=True, help="dataset evaluated without training, e.g. ml-100k")
    parser.add_argument("--checkpoint", default=None, help="an AlphaRec checkpoint trained on --source (else train)")
    parser.add_argument("--trust_checkpoint", "--trust-checkpoint", action="store_true",
                        help="load a checkpoint that is not plain data (runs code from the file; only for your own)")
    add_config_files(parser)
    parser.add_argument("--source_epochs", type=int, default=None, help="epochs on --source (default: AlphaRec.yaml)")
    parser.add_argument("--target_eval_args", default=None,
                        help="YAML dict of the target's eval_args (default: the source's split)")
    return parser


def intention_parser(parser=None):
    """The options of ``intention``."""
    from recbole_genrec.cli import add_config_files

    parser = parser or argparse.ArgumentParser(prog=f"{PROG} intention", epilog=EPILOG)
    parser.description = ("AlphaRec user intention: the share of each genre in the top-k with and without a text "
                          "query '<genre> movies' mixed into the user's representation.")
    parser.add_argument("--dataset", default="ml-100k", help="dataset (default ml-100k)")
    parser.add_argument("--genres", nargs="+", default=["Horror", "Comedy", "Romance", "Sci-Fi", "Documentary"],
                        help="genres to query (values of --field)")
    parser.add_argument("--alpha", type=float, default=0.2, help="weight of the query in the user vector")
    parser.add_argument("--topk", type=int, default=10, help="length of the recommendation lists")
    parser.add_argument("--field", default="class", help="item field holding the genres")
    parser.add_argument("--query_template", default="{genre} movies", help="text of a query")
    parser.add_argument("--checkpoint", default=None, help="an AlphaRec checkpoint (else train one)")
    parser.add_argument("--trust_checkpoint", "--trust-checkpoint", action="store_true",
                        help="load a checkpoint that is not plain data (runs code from the file; only for your own)")
    add_config_files(parser)
    return parser


def _parse(parser, argv):
    """``(args, config_dict)``: the parser's options, and every ``--key=value`` as run_recbole_genrec.py reads it."""
    import recbole_genrec  # noqa: F401  (compat shims)
    from recbole_genrec.cli import parse_config_overrides

    args, extra = parser.parse_known_args(argv)
    config_dict = parse_config_overrides(extra)
    if args.trust_checkpoint:
        config_dict["trust_checkpoint"] = True
    sys.argv = sys.argv[:1]  # the options were parsed here; keep RecBole's Config from re-reading them
    return args, config_dict


def zeroshot_main(argv=None):
    """``python -m recbole_genrec.alpharec.cli zeroshot --source=... --target=...``."""
    args, config_dict = _parse(zeroshot_parser(), argv)
    from recbole_genrec.alpharec.zeroshot import format_table, zero_shot
    from recbole_genrec.cli import config_files, parse_value

    source_dict = {"epochs": args.source_epochs} if args.source_epochs else {}
    target_dict = ({"eval_args": parse_value(args.target_eval_args, "--target_eval_args")}
                   if args.target_eval_args else {})

    rows, info = zero_shot(args.source, args.target, args.checkpoint, config_files(args.config_files), config_dict,
                           source_dict, target_dict)
    print(f"source: {info['source']}  target: {info['target']}  checkpoint: {info['checkpoint']}")
    if "source_test" in info:
        print(f"source test: {info['source_test']}")
    print(format_table(rows))
    return rows, info


def intention_main(argv=None):
    """``python -m recbole_genrec.alpharec.cli intention --dataset=... --genres ...``."""
    args, config_dict = _parse(intention_parser(), argv)
    from recbole_genrec.alpharec.intention import format_table, genre_share, load_or_train
    from recbole_genrec.cli import config_files

    model, train_dataset = load_or_train(args.dataset, args.checkpoint, config_files(args.config_files), config_dict)
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
        parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split("\n")[0],
                                         epilog=f"`{PROG} COMMAND --help` lists a command's options. {EPILOG}")
        commands = parser.add_subparsers(title="commands", metavar="COMMAND")
        zeroshot_parser(commands.add_parser("zeroshot", help="train on one dataset, evaluate on another"))
        intention_parser(commands.add_parser("intention", help="genre share of the top-k with a text query"))
        if argv and argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: the first argument is the command ({', '.join(COMMANDS)}); see --help",
              file=sys.stderr)
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
