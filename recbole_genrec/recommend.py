"""Ask a trained model what it recommends, in raw ids and titles.

::

    python -m recbole_genrec.recommend --checkpoint saved/TIGER-....pth --user 196 [--k 10]
        [--history "242,302,377"] [--new_items new.tsv] [--keep_history] [--data_path DIR] [--trust_checkpoint]
    python -m recbole_genrec.recommend --checkpoint saved/TIGER-....pth --user 196,186,22      # batch: one load
    python -m recbole_genrec.recommend --checkpoint saved/TIGER-....pth --interactive           # queries on stdin

prints ``rank | item_id | title | score`` (plus ``code``, the semantic ID, for generative models, and ``new`` marking
items no one trained on: the held-out items of a cold-start run, added and ranked as its evaluation adds and ranks
them, ``coldstart_epsilon`` included, and ``--new_items``). The same is
:class:`Recommender` in Python (load once, then ``.recommend(user=...)`` per query), or :func:`recommend` for one
query, which return :class:`Recommendations`.

* The user and item ids of the command line are checked against the dataset's atomic files before the model and
  the dataset are loaded: a misspelt id fails in about a second. The dataset and model are then loaded once, for
  every query of the batch or of the interactive session.
* The user's history is their interactions in the dataset, oldest first (all splits: "what next, now?"), or the
  raw item ids of ``--history`` (which replaces it; a sequential model is needed for that). Items already in the
  history are not recommended unless ``--keep_history``.
* ``--new_items FILE``: a tab-separated file with a header, an ``item_id`` column and a ``title`` column (other
  columns are appended to the text as ``column: value``). The items are added once, with the model's ``add_items``
  (TIGER family: semantic IDs from the stored tokenizer; AlphaRec: its text mapping), without retraining, listed
  with their codes, and may be used in ``--history``.
* Unknown users or items raise :class:`ValueError` naming them. A user with no history gets the items with the
  most training interactions, and the result says so (``Recommendations.note``).
* Checkpoints are loaded with ``weights_only=True`` (:func:`load_checkpoint`); ``--trust-checkpoint`` is the opt-in
  for files that are not plain data. The data is read from ``--data_path`` (the folder holding ``<dataset>/``) or
  searched as for training, never from a folder the checkpoint names.
"""

import argparse
import csv
import logging
import sys
from dataclasses import dataclass, field
from typing import List, Optional

import torch

logger = logging.getLogger(__name__)


@dataclass
class Recommendations:
    """Ranked items for one query: ``rows`` of dicts ``rank, item_id, title, score[, code]``."""

    user: Optional[str]
    rows: List[dict]
    history: List[str] = field(default_factory=list)
    note: str = ""

    def table(self):
        from tabulate import tabulate

        head = f"user {self.user}" if self.user is not None else "given history"
        lines = [f"{head}: {len(self.history)} history items" + (f" (last: {', '.join(self.history[-5:])})"
                                                                  if self.history else "")]
        if self.note:
            lines.append(self.note)
        lines.append(tabulate(self.rows, headers="keys", floatfmt=".4f"))
        return "\n".join(lines)


# ============================================================================= checkpoint -> model
def load_checkpoint(path, trust_checkpoint=False):
    """The checkpoint dict, read as data (:func:`recbole_genrec.checkpoint.load_checkpoint`; ``trust_checkpoint``:
    the opt-in for files that are not)."""
    from recbole_genrec.checkpoint import load_checkpoint as read_checkpoint

    return read_checkpoint(path, trust_checkpoint)


def _config_from(checkpoint):
    from recbole_genrec import Config

    config = checkpoint.get("config")
    if config is None:
        raise ValueError("the checkpoint has no 'config'; it must hold the config of the run that trained it")
    if not isinstance(config, dict):
        return config  # a Config object (restored through the allow-list)
    values = dict(config)
    derived = ("model", "dataset", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device", "local_rank",
               "single_spec", "model_class", "valid_neg_sample_args", "test_neg_sample_args", "eval_neg_sample_args")
    model, dataset = values["model"], values["dataset"]
    import os

    # RecBole's data_path is '<folder>/<dataset>' (or the hook's view): Config joins the dataset name again
    source = values.get("genrec_source_data_path") or values.get("data_path")
    if source:
        values["data_path"] = os.path.dirname(os.path.normpath(source))
    sampling = values.get("train_neg_sample_args")
    if isinstance(sampling, dict) and sampling.get("distribution") == "none":
        values["train_neg_sample_args"] = None  # RecBole's processed form of "no negatives"
    saved_argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        return Config(model=model, dataset=dataset,
                      config_dict={k: v for k, v in values.items() if k not in derived})
    finally:
        sys.argv = saved_argv


def load_model(checkpoint_path, data_path=None, trust_checkpoint=False):
    """``(config, model, dataset, train_dataset, interactions)`` of a checkpoint, the model in eval mode.

    ``data_path`` (the folder holding ``<dataset>/``) and ``trust_checkpoint`` are the caller's, never the
    checkpoint's (:func:`recbole_genrec.checkpoint.restore_config`).

    ``interactions`` is the dataset's ``(user, item, time)`` table of internal ids, all splits, taken before
    RecBole turns sequential data into (history, target) samples."""
    from recbole_genrec.checkpoint import drop_unrestored, load_weights, restore_config
    from recbole_genrec.run_builder import Prepared, build_model, load_dataset, split

    checkpoint = load_checkpoint(checkpoint_path, trust_checkpoint)
    if isinstance(checkpoint.get("config"), dict):  # a config saved as a plain dict (trusted files only)
        checkpoint["config"] = _config_from(checkpoint)
        checkpoint["genrec_dropped_config"] = drop_unrestored(checkpoint["config"])
    config = restore_config(checkpoint, checkpoint_path, data_path, trust_checkpoint)
    config["show_progress"] = False
    dataset = load_dataset(config)
    columns = [c for c in (dataset.uid_field, dataset.iid_field, dataset.time_field) if c in dataset.inter_feat]
    interactions = dataset.inter_feat[columns].copy()  # before split() turns sequences into samples
    data = Prepared(dataset, *split(config, dataset))  # the run's own path (cold start included)
    train_data = data.train
    model = build_model(config, data)
    load_weights(model, checkpoint, checkpoint_path)
    model.eval()
    return config, model, dataset, train_data._dataset, interactions


# ============================================================================= new items
def read_new_items(path):
    """``(raw ids, titles, texts)`` from a TSV with ``item_id`` and ``title`` columns (header required)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = [c.split(":")[0] for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        if "item_id" not in columns or "title" not in columns:
            raise ValueError(f"{path}: needs a header with 'item_id' and 'title' columns (tab-separated), "
                             f"got {columns}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path} lists no items")
    ids = [r["item_id"].strip() for r in rows]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"{path}: item ids {dup[:5]} appear more than once")
    extra = [c for c in columns if c not in ("item_id", "title")]
    texts = [" ".join([r["title"].strip()] + [f"{c}: {r[c].strip()}" for c in extra if (r.get(c) or "").strip()])
             for r in rows]
    empty = [ids[i] for i, r in enumerate(rows) if not r["title"].strip()]
    if empty:
        raise ValueError(f"{path}: items {empty[:5]} have an empty title")
    return ids, [r["title"].strip() for r in rows], texts


# ============================================================================= the query
class _Catalogue:
    """Raw id <-> internal id and titles, the dataset's items plus those added at query time."""

    def __init__(self, dataset):
        from recbole_genrec.preprocess.features import _titles

        self.tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
        self.titles = list(_titles(dataset, self.tokens))
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def add(self, tokens, titles, first_id):
        known = [t for t in tokens if t in self.index]
        if known:
            raise ValueError(f"new items {known[:5]} are already items of the dataset; give them new ids")
        if first_id != len(self.tokens):
            raise RuntimeError(f"new items got ids from {first_id}, expected {len(self.tokens)}")
        for t, title in zip(tokens, titles):
            self.index[t] = len(self.tokens)
            self.tokens.append(t)
            self.titles.append(title)

    def ids(self, raw_ids):
        unknown = [r for r in raw_ids if r not in self.index or r == "[PAD]"]
        if unknown:
            raise ValueError(f"unknown items {unknown[:10]}: not in the dataset (nor in --new-items)")
        return [self.index[r] for r in raw_ids]


def _user_history(dataset, interactions, user_raw, users=None):
    """``(internal id, history)`` of a raw user id; ``users`` (raw id -> internal id) saves the lookup."""
    uid, iid, time_field = dataset.uid_field, dataset.iid_field, dataset.time_field
    if users is None:
        users = {str(t): i for i, t in enumerate(dataset.field2id_token[uid])}
    user = users.get(str(user_raw))
    if user_raw == "[PAD]" or user is None:
        raise ValueError(f"unknown user {user_raw!r}: not a user of '{dataset.dataset_name}' after RecBole's "
                         f"filtering (pass --history RAW_ITEM_IDS to rank for a history instead)")
    rows = interactions[interactions[uid] == user]
    if time_field in rows.columns:
        rows = rows.sort_values(time_field, kind="stable")
    return user, [int(i) for i in rows[iid].tolist()]


def _popular(train_dataset, n_items, k, exclude):
    counts = torch.bincount(train_dataset.inter_feat[train_dataset.iid_field], minlength=n_items).float()
    counts = torch.cat([counts, counts.new_zeros(max(0, n_items - counts.numel()))])[:n_items]
    counts[0] = float("-inf")
    counts[list(exclude)] = float("-inf")
    scores, items = torch.topk(counts, min(k, n_items - 1))
    return items.tolist(), scores.tolist()


def _scores(model, config, user, history):
    """`(n_items,)` scores of every item for one user / history."""
    from recbole.data.interaction import Interaction
    from recbole.utils import ModelType

    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        max_len = int(config["MAX_ITEM_LIST_LENGTH"])
        recent = history[-max_len:]
        seq = torch.zeros(1, max_len, dtype=torch.long)
        seq[0, :len(recent)] = torch.tensor(recent, dtype=torch.long)
        interaction = Interaction({model.USER_ID: torch.tensor([user or 0]), model.ITEM_SEQ: seq,
                                   model.ITEM_SEQ_LEN: torch.tensor([len(recent)])})
    else:
        interaction = Interaction({model.USER_ID: torch.tensor([user])})
    with torch.no_grad():
        return model.full_sort_predict(interaction.to(model.device)).view(-1).float().cpu()


class Recommender:
    """A checkpoint loaded once (:func:`load_model`), answering many queries with :meth:`recommend`.

    ``new_items``: path of a TSV of new items (see the module docstring), added once at load; :attr:`added` lists
    them (``item_id, title`` and, for generative models, their ``code``)."""

    def __init__(self, checkpoint=None, new_items=None, loaded=None, data_path=None, trust_checkpoint=False):
        from recbole_genrec.data import coldstart

        loaded = loaded if loaded is not None else load_model(checkpoint, data_path, trust_checkpoint)
        self.config, self.model, self.dataset, self.train_dataset, self.interactions = loaded
        self.catalogue = _Catalogue(self.dataset)
        self.users = {str(t): i for i, t in enumerate(self.dataset.field2id_token[self.dataset.uid_field])}
        self.added = []
        self.new = set()  # internal ids of items no one trained on: marked in the output
        if new_items is not None:
            self.add_items(new_items)
        self.rerank = None
        if coldstart.enabled(self.config):  # as evaluated: held-out items added after training, coldstart_epsilon
            held, self.rerank = coldstart.ranking_for(self.config, self.model, self.dataset)
            self.new.update(held.tolist())

    def codes(self, items):
        """``"3-17-0"`` per internal item id for a generative model (``""`` without a code), else None."""
        if not hasattr(self.model, "code_table"):
            return None
        table = self.model.code_table.codes.cpu()
        return ["-".join(str(c) for c in table[i].tolist()) if (table[i] >= 0).all() else "" for i in items]

    def add_items(self, path):
        """Add the items of the TSV ``path`` to the model, without retraining; returns their rows."""
        model, config = self.model, self.config
        if not hasattr(model, "add_items"):
            raise ValueError(f"{config['model']} cannot take new items without retraining (no add_items); "
                             f"use TIGER, DiscRec, PRORec or AlphaRec")
        tokens, titles, texts = read_new_items(path)
        known = [t for t in tokens if t in self.catalogue.index]
        if known:
            raise ValueError(f"new items {known[:5]} are already items of the dataset; give them new ids")
        added = model.add_items(texts=texts)
        ids = [int(i) for i in (added.item_ids if hasattr(added, "item_ids") else added)]
        self.catalogue.add(tokens, titles, ids[0])
        self.new.update(ids)
        if getattr(added, "skipped", None) is not None and added.skipped.any():
            logger.warning(f"{int(added.skipped.sum())} new items got no semantic ID and cannot be recommended: "
                           f"{[tokens[i] for i in added.skipped.nonzero().flatten().tolist()][:5]}")
        codes = self.codes(ids)
        rows = [{"item_id": t, "title": title} for t, title in zip(tokens, titles)]
        for row, code in zip(rows, codes or []):
            row["code"] = code or "(none)"
        self.added += rows
        return rows

    def recommend(self, user=None, k=10, history=None, keep_history=False):
        r"""Top-``k`` items for ``user`` (raw id) or for ``history`` (list of raw item ids):
        :class:`Recommendations`. ``keep_history``: also rank the items of the history (excluded by default)."""
        from recbole.utils import ModelType

        config, model, catalogue = self.config, self.model, self.catalogue
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if user is None and history is None:
            raise ValueError("pass a user (--user RAW_ID) or a history (--history RAW_ITEM_IDS)")
        uid = None
        if history is not None:
            if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
                raise ValueError(f"--history needs a sequential model; {config['model']} ranks for known users "
                                 f"(--user RAW_ID)")
            items = catalogue.ids([str(h) for h in history])
            if user is not None:
                uid, _ = _user_history(self.dataset, self.interactions, str(user), self.users)
        else:
            uid, items = _user_history(self.dataset, self.interactions, str(user), self.users)
        n_items = len(catalogue.tokens)
        exclude = set() if keep_history else set(items)
        note = ""
        if not items:
            top, scores = _popular(self.train_dataset, n_items, k, exclude)
            note = "no history: these are the most popular items (training interactions), not personalised"
        else:
            beam = getattr(model, "beam_size", None)
            if beam is not None:  # a generative model returns beam_size items: widen it so k remain after exclusion
                model.beam_size = max(beam, int(k) + len(exclude))
            try:
                scores_all = _scores(model, config, uid, items)[:n_items]  # [n_items]
            finally:
                if beam is not None:
                    model.beam_size = beam
            scores_all[0] = float("-inf")
            if exclude:
                scores_all[list(exclude)] = float("-inf")
            if self.rerank is not None:
                scores_all = self.rerank(scores_all, int(k))
            values, top = torch.topk(scores_all, min(int(k), n_items - 1))
            keep = torch.isfinite(values)
            top, scores = top[keep].tolist(), values[keep].tolist()
            if len(top) < int(k):
                note = (f"only {len(top)} items were scored (a generative model returns beam_size items; "
                        f"raise beam_size for more)")
        codes = self.codes(top)
        rows = []
        for rank, (item, score) in enumerate(zip(top, scores), start=1):
            row = {"rank": rank, "item_id": catalogue.tokens[item], "title": catalogue.titles[item], "score": score}
            if codes is not None:
                row["code"] = codes[rank - 1]
            if self.new or self.rerank is not None:
                row["new"] = "new" if item in self.new else ""
            rows.append(row)
        return Recommendations(user=None if user is None else str(user), rows=rows,
                               history=[catalogue.tokens[i] for i in items], note=note)


def recommend(checkpoint=None, user=None, k=10, history=None, new_items=None, keep_history=False, loaded=None,
              data_path=None, trust_checkpoint=False):
    r"""Top-``k`` items for ``user`` (raw id) or for ``history`` (list of raw item ids): one query of a
    :class:`Recommender` (for many queries, make one and call its ``recommend``).

    Args:
        checkpoint: path of a checkpoint (or pass ``loaded=load_model(path)`` to reuse a loaded model).
        new_items: path of a TSV of new items (see the module docstring), added before ranking.
        keep_history: also rank the items of the history (excluded by default).
        data_path, trust_checkpoint: the folder holding ``<dataset>/`` and the opt-in (see :func:`load_model`).
    Returns:
        :class:`Recommendations`.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return Recommender(checkpoint, new_items, loaded, data_path, trust_checkpoint).recommend(user, k, history,
                                                                                       keep_history)


# ============================================================================= the command line
def check_ids(checkpoint, users=(), items=(), new_items=None, data_path=None):
    """Raise ``ValueError`` for raw user or item ids that the checkpoint's dataset files do not have, before any
    dataset or model is built (``checkpoint``: the loaded dict; ``data_path``: the folder holding ``<dataset>/``,
    else the folder the checkpoint was trained on). Ids that RecBole's filtering removes are caught at query time."""
    import glob
    import os

    import pandas as pd

    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None

    def get(key):  # a dict, or a Config restored from a RecBole checkpoint
        try:
            return config[key]
        except (KeyError, TypeError, AttributeError):
            return None

    dataset = get("dataset")
    folder = os.path.join(data_path, str(dataset)) if data_path else get("genrec_source_data_path") or get("data_path")
    if config is None or not dataset or not folder:
        return
    files = sorted(glob.glob(os.path.join(glob.escape(folder), f"{glob.escape(dataset)}*.inter")))
    if not files:
        return  # the dataset is looked up elsewhere when it is loaded, which then reports what is missing
    sep = get("field_separator") or "\t"
    wanted = {"user": (get("USER_ID_FIELD"), [str(u) for u in users]),
              "item": (get("ITEM_ID_FIELD"), [str(i) for i in items])}
    extra_items = set(read_new_items(new_items)[0]) if new_items else set()
    for kind, (field, ids) in wanted.items():
        if not ids or not field:
            continue
        known = set()
        for path in files:
            with open(path, encoding=get("encoding") or "utf-8") as f:
                header = [c.split(":")[0] for c in f.readline().rstrip("\r\n").split(sep)]
            if field not in header:
                return
            known |= set(pd.read_csv(path, sep=sep, usecols=[header.index(field)], dtype=str, header=0,
                                     keep_default_na=False, engine="c").iloc[:, 0])
        unknown = [i for i in ids if i not in known and i not in extra_items]
        if unknown:
            where = ", ".join(os.path.basename(p) for p in files)
            what = f"{kind} {unknown[0]!r}" if len(unknown) == 1 else f"{kind}s {unknown[:10]}"
            raise ValueError(f"unknown {what}: not in the '{field}' column of {where}"
                             + (" nor in --new_items" if kind == "item" and new_items else ""))


def _split_ids(text):
    return [t for t in text.replace(",", " ").split() if t]


def _query(recommender, line, k, keep_history):
    """One line of ``--interactive``: ``USER`` or ``history ITEM ITEM ...`` (comma or space separated)."""
    words = _split_ids(line)
    if words and words[0].lower() in ("history", "h"):
        return recommender.recommend(history=words[1:], k=k, keep_history=keep_history)
    if len(words) != 1:
        raise ValueError(f"expected a user id or `history ITEM ...`, got {line.strip()!r}")
    return recommender.recommend(user=words[0], k=k, keep_history=keep_history)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_genrec.recommend", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by a training run")
    parser.add_argument("--user", help="raw user id (as in the .inter file); several, comma separated, are "
                                       "answered one after the other with one load")
    parser.add_argument("--k", type=int, default=10, help="number of items (default 10)")
    parser.add_argument("--history", help="raw item ids, comma or space separated, oldest first (replaces the "
                                          "user's own history; \"\" = no history)")
    parser.add_argument("--new_items", "--new-items", help="TSV with item_id and title columns: items added "
                                                          "without retraining")
    parser.add_argument("--keep_history", "--keep-history", action="store_true",
                        help="also recommend items of the history")
    parser.add_argument("--interactive", action="store_true",
                        help="after loading, answer queries read from stdin, one a line: USER, or history ITEM ...")
    parser.add_argument("--data_path", "--data-path",
                        help="folder that holds <dataset>/ (default: searched as for training)")
    parser.add_argument("--trust_checkpoint", "--trust-checkpoint", action="store_true",
                        help="load a checkpoint that is not plain data (runs code from the file; only for your own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from recbole_genrec.runlog import quiet_known_warnings

    quiet_known_warnings()
    users = _split_ids(args.user) if args.user is not None else []
    history = _split_ids(args.history) if args.history is not None else None
    if not users and history is None and not args.interactive:
        parser.error("pass --user RAW_ID[,RAW_ID...], --history RAW_ITEM_IDS or --interactive")
    if args.k < 1:
        parser.error(f"--k must be >= 1, got {args.k}")
    try:
        checkpoint = load_checkpoint(args.checkpoint, args.trust_checkpoint)
        check_ids(checkpoint, users, history or [], args.new_items, args.data_path)  # before anything is built
        recommender = Recommender(args.checkpoint, args.new_items, data_path=args.data_path,
                                  trust_checkpoint=args.trust_checkpoint)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if recommender.added:
        from tabulate import tabulate

        print(f"{len(recommender.added)} items added without retraining:")
        print(tabulate(recommender.added, headers="keys"))
    status = 0
    for user in users or ([None] if history is not None else []):
        try:
            print(recommender.recommend(user=user, k=args.k, history=history, keep_history=args.keep_history).table())
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 2
    if args.interactive:
        print("one query a line: USER, or history ITEM ITEM ...; an empty line or Ctrl-D ends", file=sys.stderr)
        for line in sys.stdin:
            if not line.strip() or line.strip().lower() in ("quit", "exit"):
                break
            try:
                print(_query(recommender, line, args.k, args.keep_history).table(), flush=True)
            except ValueError as err:
                print(f"error: {err}", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
