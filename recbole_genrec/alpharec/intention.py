r"""User intention queries for AlphaRec (Sheng et al., ICLR 2025, Section "user intention capture").

A natural-language query is encoded with the *same* text encoder as the item texts
(:func:`recbole_genrec.preprocess.text_encoder.encode_texts` with the model config's
``text_encoder`` / ``text_pooling`` / ``text_max_length``), mapped into the collaborative space
by the model's own mapping (MLP or linear), and mixed into the user representation:

.. math::  \tilde u = (1-\alpha)\,\hat u + \alpha\,\hat q,
   \qquad \hat u = \frac{u}{\lVert u\rVert},\; \hat q = \frac{\mathrm{map}(\mathrm{LM}(query))}{\lVert\cdot\rVert}

where :math:`u` is the user's *propagated* representation (after the LightGCN layers, as the
model scores with it) and the query vector is *not* propagated (it has no node in the
graph). Both are L2-normalised before mixing so that ``alpha`` is the query's share on a
common scale (our choice; the paper describes the mix on the mapped representations and
uses ``alpha = 0.2``). Items are scored by cosine with :math:`\tilde u`; the user's training
items are masked by default.

Python::

    recommend_with_intention(model, train_dataset, "196", "a scary horror movie", alpha=0.2, topk=10)
    # -> [(item token, cosine), ...]

Command line (trains AlphaRec on the dataset, or loads ``--checkpoint``)::

    python -m recbole_genrec.alpharec.cli intention --dataset=ml-100k --genres Horror Comedy Romance

prints, per genre, the share of top-10 slots (over all users) filled by items of that genre
(``class`` field) without and with the query ``"{genre} movies"``.
"""

import logging

import numpy as np
import torch
import torch.nn.functional as F

from recbole_genrec.alpharec.zeroshot import build_target
from recbole_genrec.preprocess.text import read_item_table
from recbole_genrec.preprocess.text_encoder import encode_texts
from recbole_genrec.quick_start import run_recbole_genrec

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- encoding
def encode_queries(model, queries):
    """Normalised mapped query vectors ``[Q, d]`` for a list of strings (same LM as the items)."""
    config = model.config
    if isinstance(queries, str):
        queries = [queries]
    source = config["item_embedding_source"]
    if source != "text":
        logger.warning(f"item embeddings come from '{source}', queries from the text encoder: "
                       "the two spaces may not match")
    lm = encode_texts(
        list(queries), encoder=config["text_encoder"], pooling=config["text_pooling"],
        max_length=int(config["text_max_length"]), batch_size=int(config["text_batch_size"]),
        device="cpu", show_progress=False,
    )
    lm = torch.from_numpy(np.asarray(lm, dtype=np.float32)).to(model.device)
    if lm.shape[1] != model.lm_dim:
        raise ValueError(f"query embeddings have D={lm.shape[1]}, the model's items D={model.lm_dim}: "
                         "the text encoder differs from the one used for the item embeddings")
    with torch.no_grad():
        return F.normalize(model.map_lm(lm), dim=-1)


# ---------------------------------------------------------------------------- scoring
def _history_mask(dataset, n_users, n_items, device):
    """Bool ``[n_users, n_items]`` of the interactions of ``dataset`` (None if unavailable)."""
    if dataset is None:
        return None
    csr = dataset.inter_matrix(form="csr")
    mask = torch.zeros(n_users, n_items, dtype=torch.bool)
    coo = csr.tocoo()
    mask[torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))] = True
    return mask.to(device)


@torch.no_grad()
def intention_scores(model, user_ids, query_vecs=None, alpha=0.2, user_item=None):
    """Cosine scores ``[B, n_items]`` of users ``user_ids`` mixed with ``query_vecs``.

    ``query_vecs``: ``None`` (no query), ``[d]`` / ``[1, d]`` (one query for every user) or
    ``[B, d]`` (one per user), as returned by :func:`encode_queries`. Padding item 0 gets -inf.
    ``user_item``: optional precomputed ``model.user_item_representations()``.
    """
    model.eval()
    user_e, item_e = user_item if user_item is not None else model.user_item_representations()
    user_ids = torch.as_tensor(user_ids, dtype=torch.long, device=user_e.device).view(-1)
    u = user_e[user_ids]
    if query_vecs is not None and alpha != 0:
        q = query_vecs.to(u.device)
        q = q.view(1, -1) if q.dim() == 1 else q
        u = (1.0 - alpha) * u + alpha * q
    scores = F.normalize(u, dim=-1) @ item_e.t()
    scores[:, 0] = -torch.inf
    return scores


@torch.no_grad()
def recommend_batch_with_intention(model, dataset, user_ids, queries=None, alpha=0.2, topk=10,
                                   exclude_history=True, user_item=None, history=None):
    """Top-``topk`` ``(item ids [B, k], cosine scores [B, k])`` for a batch of internal user ids.

    ``queries``: None, one string (shared), a list of ``B`` strings, or a tensor from
    :func:`encode_queries`. ``dataset`` (the *training* dataset) supplies the history that is
    masked when ``exclude_history``; ``history`` may pass a precomputed mask instead.
    """
    if isinstance(queries, (str, list, tuple)):
        queries = encode_queries(model, queries)
    scores = intention_scores(model, user_ids, queries, alpha, user_item)
    if exclude_history:
        if history is None:
            history = _history_mask(dataset, model.n_users, model.n_items, scores.device)
        if history is not None:
            uid = torch.as_tensor(user_ids, dtype=torch.long, device=scores.device).view(-1)
            scores = scores.masked_fill(history[uid], -torch.inf)
    top = torch.topk(scores, k=min(topk, scores.shape[1] - 1), dim=1)
    return top.indices, top.values


def _user_id(dataset, user_token_or_id):
    field = dataset.uid_field
    if isinstance(user_token_or_id, (int, np.integer)) and not isinstance(user_token_or_id, bool):
        return int(user_token_or_id)
    return int(dataset.token2id(field, str(user_token_or_id)))


def recommend_with_intention(model, dataset, user_token_or_id, query, alpha=0.2, topk=10, exclude_history=True):
    """``[(item token, cosine score), ...]`` for one user (external token or internal int id) and
    a free-text ``query`` (``None`` or ``""`` = no query). ``alpha``: the query's share."""
    uid = _user_id(dataset, user_token_or_id)
    queries = query if query else None
    ids, scores = recommend_batch_with_intention(model, dataset, [uid], queries, alpha, topk, exclude_history)
    tokens = dataset.id2token(dataset.iid_field, ids[0].cpu().numpy())
    return [(str(t), float(s)) for t, s in zip(tokens, scores[0].cpu().tolist())]


# ---------------------------------------------------------------------------- evaluation
def item_categories(dataset, field="class"):
    """``{internal item id: set of values of field}`` read from the dataset's ``.item`` file."""
    table, types = read_item_table(dataset.config)
    if field not in table.columns:
        raise KeyError(f"the .item file has no '{field}' field (fields: {list(table.columns)})")
    iid = dataset.iid_field
    token2id = dataset.field2token_id[iid]
    out = {}
    for token, value in zip(table[iid], table[field]):
        if token in token2id:
            vals = value.split() if types.get(field) == "token_seq" else [value]
            out[token2id[token]] = set(vals)
    return out


@torch.no_grad()
def genre_share(model, dataset, genres, alpha=0.2, topk=10, field="class", query_template="{genre} movies",
                users=None, batch_size=1024):
    """Per genre: share of top-``topk`` slots holding an item of that genre, over ``users``
    (default: every user with training items), without and with the query
    ``query_template.format(genre=...)``. ``dataset`` is the training dataset (history mask).

    Returns a list of dicts ``{genre, query, share_without, share_with, catalog_share, n_users}``.
    """
    cats = item_categories(dataset, field)
    n_items = model.n_items
    if users is None:
        counts = np.asarray(dataset.inter_matrix(form="csr").sum(axis=1)).ravel()
        users = np.nonzero(counts > 0)[0]
        users = users[users > 0]
    users = torch.as_tensor(np.asarray(users), dtype=torch.long)
    user_item = model.user_item_representations()
    history = _history_mask(dataset, model.n_users, n_items, user_item[0].device)
    base = torch.cat([recommend_batch_with_intention(model, dataset, users[s:s + batch_size], None, alpha, topk,
                                                     user_item=user_item, history=history)[0]
                      for s in range(0, len(users), batch_size)])
    queries = [query_template.format(genre=genre) for genre in genres]
    query_vecs = encode_queries(model, queries)  # one encoder load for all genres
    rows = []
    for genre, query, q in zip(genres, queries, query_vecs):
        in_genre = torch.zeros(n_items, dtype=torch.bool, device=base.device)
        for item, values in cats.items():
            if genre in values:
                in_genre[item] = True
        with_q = torch.cat([recommend_batch_with_intention(model, dataset, users[s:s + batch_size], q, alpha, topk,
                                                           user_item=user_item, history=history)[0]
                            for s in range(0, len(users), batch_size)])
        rows.append({
            "genre": genre, "query": query,
            "share_without": float(in_genre[base].float().mean()),
            "share_with": float(in_genre[with_q].float().mean()),
            "catalog_share": float(in_genre[1:].float().mean()),
            "n_users": int(len(users)),
        })
    return rows


def format_table(rows, topk=10, alpha=0.2):
    head = f"| genre | query | share@{topk} without query | share@{topk} with query (alpha={alpha}) | catalog share |"
    lines = [head, "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['genre']} | {r['query']} | {r['share_without']:.3f} | {r['share_with']:.3f} "
                     f"| {r['catalog_share']:.3f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line
def load_or_train(dataset_name, checkpoint=None, config_files=None, config_dict=None):
    """``(model, train_dataset)``: from ``checkpoint`` or by training AlphaRec on the dataset.

    A checkpoint is rebuilt with a fresh config (the checkpoint's architecture keys, seed and
    ``eval_args``, so the same split) through :func:`recbole_genrec.alpharec.zeroshot.build_target`.
    """
    if checkpoint is None:
        result = run_recbole_genrec(model="AlphaRec", dataset=dataset_name, config_file_list=config_files,
                                    config_dict=config_dict, saved=True)
        checkpoint = result["checkpoint"]
        logger.info(f"AlphaRec test result on {dataset_name}: {dict(result['test_result'])}")
    from recbole_genrec.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint, bool((config_dict or {}).get("trust_checkpoint")))  # data only, unless trusted
    same_split = {key: ckpt["config"][key] for key in ("eval_args", "seed", "reproducibility")
                  if key in ckpt["config"]}
    _, model, train_data, _, _ = build_target(dataset_name, ckpt, config_files, {**same_split, **(config_dict or {})})
    return model, train_data.dataset
