"""Command line: build (or reuse) item embeddings and semantic IDs for one dataset.

    python -m recbole_genrec.preprocess --dataset=ml-100k [--model=TIGER] [--config_files a.yaml]
        [--plot] [--export_tsv out.tsv] [--key=value ...]

Without ``--model`` a plain GeneralRecommender (BPR) is used with
``genrec_features: [text_emb, sid]``; every other ``--key=value`` is a RecBole/plugin config key
(e.g. ``--sid_method=rkmeans --sid_codebook_size=64``), parsed as ``run_recbole_genrec.py`` parses it
(:func:`recbole_genrec.cli.parse_config_overrides`, never ``eval``'d). The log lines have RecBole's format, as in a
training run.
"""

import argparse
import json
import logging
import sys


def parse_args(argv):
    from recbole_genrec.cli import add_config_files

    parser = argparse.ArgumentParser(prog="python -m recbole_genrec.preprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. ml-100k")
    parser.add_argument("--model", default=None, help="model whose genrec_features/config to use (default BPR)")
    add_config_files(parser)
    parser.add_argument("--plot", action="store_true", help="write code_usage.png beside the codes")
    parser.add_argument("--export_tsv", "--export-tsv", dest="export_tsv", default=None,
                        help="write item token, title, codes")
    return parser.parse_known_args(argv)


def build_config(args, extra):
    """A recbole_genrec Config; ``extra`` (``--key=value``) is read as run_recbole_genrec.py reads it."""
    import recbole_genrec  # noqa: F401  (compat shims before RecBole)
    from recbole_genrec import Config
    from recbole_genrec.cli import config_files, parse_config_overrides

    config_dict = parse_config_overrides(extra)
    if not args.model:
        config_dict.setdefault("genrec_features", ["text_emb", "sid"])
    saved_argv = sys.argv
    sys.argv = saved_argv[:1]  # parsed above; RecBole's Config must not read (and eval) them again
    try:
        config = Config(model=args.model or "BPR", dataset=args.dataset,
                        config_file_list=config_files(args.config_files), config_dict=config_dict)
    finally:
        sys.argv = saved_argv
    if not config["genrec_features"]:
        logging.getLogger(__name__).info(f"{config['model']} sets no genrec_features; preparing [text_emb, sid]")
        config["genrec_features"] = ["text_emb", "sid"]
    return config


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)-15s %(levelname)s  %(message)s",
                        datefmt="%d %b %H:%M")  # RecBole's console format (recbole.utils.init_logger)
    from recbole_genrec.runlog import quiet_known_warnings

    quiet_known_warnings()
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    config = build_config(args, extra)
    from recbole_genrec.preprocess.hook import diagnostics_table, prepare_features
    from recbole_genrec.data import resolve_data_path

    resolve_data_path(config)
    summary = prepare_features(config, plot=args.plot)
    print(f"dataset view (RecBole data_path): {summary['overlay']}\ncache store: {summary['store']}")
    print(f"items: {summary['n_items']}  embedding dim: {summary['embedding_dim']}  "
          f"codebook sizes: {summary['codebook_sizes']}")
    print("cache: " + json.dumps(summary["cache"]))
    print("timings (s): " + json.dumps(summary["timings"]))
    if "diagnostics" in summary:
        print(diagnostics_table(summary["diagnostics"]))
    if summary.get("plot"):
        print(f"plot: {summary['plot']}")
    if args.export_tsv:
        from recbole_genrec.preprocess.features import export_codes_tsv
        from recbole_genrec.data import create_dataset

        export_codes_tsv(create_dataset(config), args.export_tsv)
        print(f"codes exported to {args.export_tsv}")
    return summary


if __name__ == "__main__":
    main()
