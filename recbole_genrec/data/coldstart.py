"""Cold-start protocol: hold items out of training entirely, then recommend them from their text.

TIGER (Rajput et al., NeurIPS 2023, Section 4.3 "Cold-start recommendation") holds 5% of the items out of the
training data and asks whether the model retrieves them at test time from their semantic IDs. Here, with
``genrec_coldstart: True`` (config keys in ``properties/overall.yaml``):

1. :func:`held_out_tokens` picks ``round(coldstart_ratio * n_items)`` items (default 5%) uniformly at random with
   ``coldstart_seed`` (default ``seed``) from the sorted item tokens RecBole keeps, so every model on the same data
   and seed holds out the same items;
2. the preprocessing hook fits the tokenizer on the other items only and gives the held-out items no code
   (``-1`` rows); their text embeddings are kept (text is content, not an interaction);
3. :func:`data_preparation` (called by :func:`recbole_genrec.run_builder.split`, which then applies
   ``train_sampling``) is RecBole's, then removes every interaction of a held-out item from what trains or
   selects a model, and keeps RecBole's training sampler from drawing them as negatives: training and validation samples whose target is held out are dropped, held-out items are
   removed from the histories of training and validation samples (the rest of the history is kept, in order), and
   samples left with an empty history are dropped. For general models (one row per interaction) the rows of
   held-out items are dropped. Test samples are left as RecBole builds them: a held-out item may be the target
   and may appear in the history, as an item that arrived after training would;
4. :func:`guard` (end of the split) and :func:`guard_model` (after the model is built) raise :class:`ColdStartLeak`
   naming the first held-out item that reaches a fit: a split, the sampler, the hook's tokenizer, external
   embeddings written for another held-out set, a model's own codes (PRORec's stage I) or negatives (AlphaRec);
5. after training, models with ``add_items`` get the held-out items (TIGER family: codes from the stored tokenizer;
   AlphaRec: nothing to add, its text mapping already scores every item) and :func:`evaluate` ranks all items for
   every test interaction, reporting Recall@K / NDCG@K separately for held-out targets and for the rest, and the
   share of held-out items in the top K.

:func:`content_knn_scores` is TIGER's "Semantic_KNN" baseline: the mean cosine similarity between the text
embeddings of the user's last items and every item's.
"""

import logging
import math

import numpy as np
import torch

logger = logging.getLogger(__name__)


# ============================================================================= which items
def enabled(config):
    return bool(config["genrec_coldstart"])


def _ratio_and_seed(config):
    ratio = float(config["coldstart_ratio"])
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"coldstart_ratio must be in (0, 1), got {ratio}: the fraction of items held out "
                         f"(0.05 in the TIGER paper)")
    seed = config["coldstart_seed"] if config["coldstart_seed"] is not None else config["seed"]
    return ratio, int(seed)


def held_out_tokens(config, item_tokens):
    """Sorted external tokens of the held-out items among ``item_tokens`` (``[PAD]`` ignored)."""
    ratio, seed = _ratio_and_seed(config)
    tokens = sorted({str(t) for t in item_tokens if str(t) != "[PAD]"})
    n_held = int(round(ratio * len(tokens)))
    if n_held < 1:
        raise ValueError(f"coldstart_ratio={ratio} holds out no item of {len(tokens)}; raise it")
    pick = np.random.default_rng(seed).choice(len(tokens), n_held, replace=False)
    return sorted(tokens[i] for i in pick)


def held_out_ids(config, dataset):
    """Internal ids (sorted LongTensor) of the held-out items of a RecBole dataset."""
    id_tokens = dataset.field2id_token[dataset.iid_field]
    held = set(held_out_tokens(config, id_tokens))
    return torch.tensor(sorted(i for i, t in enumerate(id_tokens) if str(t) in held), dtype=torch.long)


# ============================================================================= splits
def _compact_histories(inter, list_fields, length_field, held):
    """Remove held-out items from the history lists (order kept); returns the new lengths `(n,)`."""
    item_list = inter[list_fields[0]]  # [n, T]
    positions = torch.arange(item_list.size(1)).unsqueeze(0)  # [1, T]
    keep = (positions < inter[length_field].unsqueeze(1)) & ~torch.isin(item_list, held)  # [n, T]
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept positions first, in order
    lengths = keep.sum(dim=1)  # [n]
    tail = positions >= lengths.unsqueeze(1)  # [n, T]
    for field in list_fields:
        values = inter[field]
        index = order.view(*order.shape, *([1] * (values.dim() - 2))).expand_as(values)
        values = torch.gather(values, 1, index)
        mask = tail.view(*tail.shape, *([1] * (values.dim() - 2))).expand_as(values)
        inter.interaction[field] = values.masked_fill(mask, 0)
    inter.interaction[length_field] = lengths.to(inter[length_field].dtype)
    return lengths


def remove_held_out(dataset, held, what):
    """A copy of a built split without any interaction of the ``held`` items (see the module docstring)."""
    inter = dataset.inter_feat
    iid = dataset.iid_field
    keep = ~torch.isin(inter[iid], held)  # [n]
    list_field = getattr(dataset, "item_id_list_field", None)
    n_in_history = 0
    if list_field is not None and list_field in inter.interaction:
        inter = inter[torch.arange(len(inter))]  # a copy: the original split stays as RecBole built it
        suffix = list_field[len(iid):]
        list_fields = [f for f in inter.columns if f.endswith(suffix) and inter[f].dim() >= 2
                       and inter[f].size(1) == inter[list_field].size(1)]
        list_fields.sort(key=lambda f: f != list_field)
        before = inter[dataset.item_list_length_field].clone()
        lengths = _compact_histories(inter, list_fields, dataset.item_list_length_field, held)
        n_in_history = int((before - lengths).sum())
        keep &= lengths > 0
    n_dropped = int((~keep).sum())
    logger.info(f"cold start: {what} keeps {int(keep.sum())} of {len(keep)} samples ({n_dropped} dropped: "
                f"held-out target or nothing left in the history; {n_in_history} held-out history entries removed)")
    return dataset.copy(inter[keep]), {"samples": int(len(keep)), "dropped": n_dropped,
                                       "history_entries_removed": n_in_history}


class HeldOutExcluded:
    """Sampler mixin: RecBole's negative sampler never draws a held-out item (every draw and re-draw goes through
    ``sampling``)."""

    genrec_held_out = np.zeros(0, dtype=np.int64)

    def sampling(self, sample_num):
        values = super().sampling(sample_num)
        bad = np.isin(values, self.genrec_held_out)
        while bad.any():  # held-out items are a small share of the catalogue: a few rounds
            values[bad] = super().sampling(int(bad.sum()))
            bad = np.isin(values, self.genrec_held_out)
        return values


def exclude_from_sampler(sampler, held):
    """``sampler`` (a RecBole training sampler, or ``None``) drawing no item of ``held`` from now on."""
    if sampler is None:
        return None
    if not isinstance(sampler, HeldOutExcluded):
        cls = type(sampler)
        sampler.__class__ = type(cls.__name__, (HeldOutExcluded, cls), {"__module__": cls.__module__})
    sampler.genrec_held_out = held.cpu().numpy()
    return sampler


def data_preparation(config, dataset):
    """RecBole's loaders with the held-out items removed from training and validation and from the training
    negatives.

    Returns ``(train_data, valid_data, test_data, info)``; ``info`` has ``held_out`` (internal ids), counts of
    what was removed, and the number of test targets that are held out.
    """
    from recbole.data.utils import create_samplers, get_dataloader
    from recbole.utils import ModelType

    from recbole_genrec.data.sequences import apply_seq_train_rows

    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        raise ValueError("the cold-start protocol supports general and sequential models, not knowledge-aware ones")
    held = held_out_ids(config, dataset)
    train_ds, valid_ds, test_ds = dataset.build()
    train_ds, train_info = remove_held_out(train_ds, held, "training")
    valid_ds, valid_info = remove_held_out(valid_ds, held, "validation")
    built = [train_ds, valid_ds, test_ds]
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    train_sampler = exclude_from_sampler(train_sampler, held)
    train_data = get_dataloader(config, "train")(config, train_ds, train_sampler, shuffle=config["shuffle"])
    train_data = apply_seq_train_rows(config, train_data)  # seq_train_rows: sequences (RPG)
    valid_data = get_dataloader(config, "valid")(config, valid_ds, valid_sampler, shuffle=False)
    test_data = get_dataloader(config, "test")(config, test_ds, test_sampler, shuffle=False)
    test_targets = test_ds.inter_feat[test_ds.iid_field]
    info = {"held_out": held, "n_items": int(dataset.item_num - 1), "n_held_out": int(held.numel()),
            "train": train_info, "valid": valid_info,
            "test_targets": int(len(test_targets)), "test_targets_held_out": int(torch.isin(test_targets, held).sum())}
    logger.info(f"cold start: {info['n_held_out']} of {info['n_items']} items held out; "
                f"{info['test_targets_held_out']} of {info['test_targets']} test targets are held-out items")
    return train_data, valid_data, test_data, info


class ColdStartLeak(AssertionError):
    """A held-out item reached something that is fitted (a training split, a tokenizer, negatives, embeddings)."""


def held_out_key(tokens):
    """The held-out set as it enters cache keys: sha256 of its sorted external tokens."""
    from recbole_genrec.preprocess.cache import strings_hash

    return strings_hash(sorted(str(t) for t in tokens))


def _leak(dataset, ids, where):
    first = int(ids[0])
    token = str(dataset.field2id_token[dataset.iid_field][first])
    raise ColdStartLeak(f"cold start: held-out item {token!r} (id {first}) reaches {where}; the protocol holds it "
                        f"out of every fit ({len(ids)} held-out items leak there)")


def _leaking(values, held):
    return torch.unique(values[torch.isin(values, held)]).tolist()


def check_training_free_of(train_dataset, held, what="the training split"):
    """Raise :class:`ColdStartLeak` naming the first held-out item in a split's targets or histories."""
    inter = train_dataset.inter_feat
    found = _leaking(inter[train_dataset.iid_field], held)
    list_field = getattr(train_dataset, "item_id_list_field", None)
    if list_field is not None and list_field in inter.interaction:
        found = sorted(set(found) | set(_leaking(inter[list_field], held)))
    if found:
        _leak(train_dataset, found, what)


def guard(config, data):
    """Assert at the end of preparation that no held-out item reaches any fit; :class:`ColdStartLeak` names the
    first that does. Checked: the training and validation splits, the training sampler's negatives, the semantic
    IDs of the hook's tokenizer and the source of external item embeddings."""
    from recbole_genrec.preprocess import features

    held = data.coldstart["held_out"]
    dataset = data.dataset
    check_training_free_of(data.train.dataset, held, "the training split")
    check_training_free_of(data.valid.dataset, held, "the validation split")
    sampler = getattr(data.train, "_sampler", None)
    if sampler is not None and not (isinstance(sampler, HeldOutExcluded)
                                    and set(sampler.genrec_held_out.tolist()) >= set(held.tolist())):
        _leak(dataset, held.tolist(), "the training negatives of RecBole's sampler")
    if "sid" in list(config["genrec_features"]):
        coded = (features.item_codes(dataset)[held] >= 0).all(dim=1)  # [n_held]
        if coded.any():
            _leak(dataset, held[coded].tolist(), "the semantic-ID tokenizer's fit (it has a code)")
    source = str(config["item_embedding_source"])
    recorded = (config["genrec_feature_hashes"] or {}).get("embedding_held_out")
    if source != "text" and recorded != held_out_key(dataset.field2id_token[dataset.iid_field][held.numpy()]):
        _leak(dataset, held.tolist(), f"the item embeddings of source {source!r} (written by a run that did not hold "
                                      f"out this set; rerun it with the same genrec_coldstart settings)")


def guard_model(model, data):
    """Assert that a model built on the prepared data fits no held-out item: codes of its own (PRORec's stage I)
    and the negatives it draws itself (AlphaRec)."""
    held = data.coldstart["held_out"]
    if hasattr(model, "code_table"):
        coded = (model.code_table.codes.cpu()[held] >= 0).all(dim=1)
        if coded.any():
            _leak(data.dataset, held[coded].tolist(), f"{type(model).__name__}'s own code fit (it has a code)")
    if hasattr(model, "sample_negatives"):
        devices = [model.device.index or 0] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the check draws: the run's random stream stays as it was
            users = torch.zeros(64, dtype=torch.long, device=model.device)
            drawn = torch.cat([model.sample_negatives(users, 256) for _ in range(4)]).flatten().cpu()  # [65536]
        found = _leaking(drawn, held.cpu())
        if found:
            _leak(data.dataset, found, f"the negatives {type(model).__name__} draws")


# ============================================================================= evaluation
def _batch_scores(score_fn, batch, n_items):
    interaction, history_index, positive_u, positive_i = batch
    scores = score_fn(interaction).view(-1, n_items).float().clone()  # [B, n_items]
    if history_index is not None:  # general models: RecBole masks the user's training items
        scores[history_index] = float("-inf")
    scores[:, 0] = float("-inf")
    return scores, positive_u, positive_i


@torch.no_grad()
def evaluate(score_fn, test_data, held, k=10, n_items=None):
    r"""Full-ranking metrics on ``test_data``, split by whether the target is a held-out item.

    Args:
        score_fn: ``interaction -> scores (B, n_items)`` (e.g. ``model.full_sort_predict``).
        test_data: a RecBole full-sort evaluation dataloader.
        held (`LongTensor`): internal ids of the held-out items.
    Returns:
        dict: ``{"held_out": {"Recall@K", "NDCG@K", "targets"}, "warm": {...}, "all": {...},
        "held_out_share@K": mean share of held-out items among the top-K of every test user}``. Ties in the
        scores are broken by ``torch.topk``; items scored ``-inf`` never count as hits.
    """
    n_items = n_items or test_data._dataset.item_num
    is_held = torch.zeros(n_items, dtype=torch.bool)
    is_held[held] = True
    hits = {"held_out": [], "warm": []}
    ndcg = {"held_out": [], "warm": []}
    shares = []
    for batch in test_data:
        scores, positive_u, positive_i = _batch_scores(score_fn, batch, n_items)
        scores = scores.cpu()
        top_scores, top = torch.topk(scores, k, dim=1)  # [B, k]
        real = torch.isfinite(top_scores)  # [B, k]
        shares.append((is_held[top] & real).sum(dim=1).float() / k)
        for u, i in zip(positive_u.tolist(), positive_i.tolist()):
            match = ((top[u] == i) & real[u]).nonzero()
            group = "held_out" if is_held[i] else "warm"
            hit = match.numel() > 0
            hits[group].append(1.0 if hit else 0.0)
            ndcg[group].append(1.0 / math.log2(int(match[0]) + 2) if hit else 0.0)
    out = {}
    for group in ("held_out", "warm"):
        n = len(hits[group])
        out[group] = {f"Recall@{k}": sum(hits[group]) / n if n else float("nan"),
                      f"NDCG@{k}": sum(ndcg[group]) / n if n else float("nan"), "targets": n}
    n_all = len(hits["held_out"]) + len(hits["warm"])
    out["all"] = {f"Recall@{k}": (sum(hits["held_out"]) + sum(hits["warm"])) / max(n_all, 1),
                  f"NDCG@{k}": (sum(ndcg["held_out"]) + sum(ndcg["warm"])) / max(n_all, 1), "targets": n_all}
    out[f"held_out_share@{k}"] = float(torch.cat(shares).mean()) if shares else float("nan")
    return out


def content_knn_scores(item_emb, item_seq, item_seq_len, last_n=1):
    r"""TIGER's Semantic_KNN: mean cosine of the last ``last_n`` history items' text embeddings with every item's.

    Args:
        item_emb (`(n_items, D)`): text embeddings (row 0 = padding).
        item_seq (`(B, T)`), item_seq_len (`(B,)`): RecBole histories (right-padded, oldest first).
    Returns:
        `(B, n_items)` float32 scores; the history's own items get ``-inf`` (they would match themselves).
    """
    unit = torch.nn.functional.normalize(item_emb.float(), dim=-1)  # [n_items, D]
    positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)  # [1, T]
    lengths = item_seq_len.unsqueeze(1)
    recent = (positions < lengths) & (positions >= lengths - int(last_n))  # [B, T]
    weights = recent.float() / recent.sum(dim=1, keepdim=True).clamp(min=1)  # [B, T]
    query = torch.einsum("bt,btd->bd", weights, unit[item_seq])  # [B, D]
    scores = query @ unit.t()  # [B, n_items]
    in_history = torch.zeros_like(scores, dtype=torch.bool)
    in_history.scatter_(1, item_seq, positions < lengths)
    scores = scores.masked_fill(in_history, float("-inf"))
    scores[:, 0] = float("-inf")
    return scores


# ============================================================================= after training
def add_held_out_items(model, dataset, held):
    """Give a trained model the held-out items it could not know; returns a summary dict.

    Generative models (a ``code_table``) get their codes from the stored tokenizer through ``add_items`` (items whose
    code would fall outside the trained vocabulary are skipped and counted); every other model scores the rows it
    already has (AlphaRec maps every item's text; ID-based models have untrained rows for them).
    """
    codes = model.code_table.codes if hasattr(model, "code_table") else getattr(model, "codes", None)  # RPG: codes
    if not torch.is_tensor(codes) or codes.dim() != 2 or not hasattr(model, "add_items"):
        return {"added": 0, "skipped": 0, "how": "the model scores its existing rows (no add_items needed)"}
    from recbole_genrec.preprocess.features import item_embeddings

    held = held.cpu()
    missing = held[~(codes.cpu()[held] >= 0).all(dim=1)]  # held-out rows still without a code
    if missing.numel() == 0:
        return {"added": 0, "skipped": 0, "how": "every held-out item already had a code"}
    emb = item_embeddings(dataset)[missing].numpy()  # [M, D]
    added = model.add_items(embeddings=emb, item_ids=missing, on_overflow="skip")
    n_skipped = int(added.skipped.sum())
    return {"added": int(missing.numel()) - n_skipped, "skipped": n_skipped,
            "how": "add_items: codes from the stored tokenizer (fitted without them), collision rule of the fit"}


def _rounded(value, places):
    """Floats of a nested dict rounded as RecBole rounds its metrics (``metric_decimal_place``)."""
    if isinstance(value, dict):
        return {key: _rounded(v, places) for key, v in value.items()}
    return round(value, places) if isinstance(value, float) else value


def report(model, dataset, test_data, info, k=10, places=4):
    """Add the held-out items to a trained ``model`` and evaluate it; the dict ``run_recbole_genrec`` returns
    (metrics rounded to ``places`` decimals, RecBole's ``metric_decimal_place``)."""
    was_training = model.training
    model.eval()
    try:
        added = add_held_out_items(model, dataset, info["held_out"])
        metrics = evaluate(model.full_sort_predict, test_data, info["held_out"], k=k)
    finally:
        model.train(was_training)
    metrics = _rounded(metrics, places)
    out = {key: value for key, value in info.items() if key != "held_out"}
    out.update({"add_items": added, "metrics": metrics})
    logger.info(f"cold start @{k}: held-out {metrics['held_out']}, warm {metrics['warm']}, "
                f"held-out share of the top-{k} {metrics[f'held_out_share@{k}']}; {added}")
    return out


def prefix_match_score_fn(model, new_items, epsilon=0.1, k=10):
    r"""TIGER-paper-style retrieval of new items for a generative ``model`` (Section 4.3): ``interaction -> scores``.

    A new item (``new_items``, ids with codes in ``model.code_table``) whose first ``L - 1`` codes equal those of a
    generated (beam) item gets that item's beam score, i.e. the collision level is ignored for new items, whose
    extra code was never a training target. At most ``floor(epsilon * k)`` new items per user keep such a score
    (the best ones; the paper's epsilon bounds the share of cold-start items in the top K), the others keep their own
    beam score (``-inf`` outside the beam).
    """
    codes = model.code_table.codes.cpu()  # [n_items, L]
    new_items = torch.as_tensor(new_items, dtype=torch.long).cpu()
    is_new = torch.zeros(codes.size(0), dtype=torch.bool)
    is_new[new_items] = True
    coded = (codes >= 0).all(dim=1)
    prefix_of = {}
    for item in ((~is_new) & coded).nonzero().flatten().tolist():
        prefix_of.setdefault(tuple(codes[item, :-1].tolist()), []).append(item)
    pairs = [(j, s) for j in new_items.tolist() if coded[j] for s in prefix_of.get(tuple(codes[j, :-1].tolist()), [])]
    n_keep = int(epsilon * k)

    def score_fn(interaction):
        scores = model.full_sort_predict(interaction).view(-1, codes.size(0)).float().cpu()  # [B, n_items]
        if not pairs or n_keep < 1:
            return scores
        new_ids = torch.tensor([p[0] for p in pairs])
        sibling = torch.tensor([p[1] for p in pairs])
        inherited = torch.full((scores.size(0), codes.size(0)), float("-inf"))
        inherited.scatter_reduce_(1, new_ids.expand(scores.size(0), -1), scores[:, sibling], reduce="amax")
        inherited[:, ~is_new] = float("-inf")
        top_vals, top_idx = torch.topk(inherited, min(n_keep, codes.size(0)), dim=1)  # the best new items per user
        keep = torch.full_like(inherited, float("-inf")).scatter_(1, top_idx, top_vals)
        return torch.maximum(scores, keep)

    return score_fn
