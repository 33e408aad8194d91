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
   selects a model and keeps RecBole's training sampler from drawing them as negatives: training and validation
   samples whose target is held out are dropped, held-out items are removed from the histories of training and
   validation samples (the rest of the history is kept, in order), and samples left with an empty history are
   dropped. For general models (one row per interaction) the rows of held-out items are dropped. Test samples are
   left as RecBole builds them: a held-out item may be the target and may appear in the history, as an item that
   arrived after training would. For models trained with a cross-entropy over every item (SASRec with
   ``loss_type: CE``, CollabEmbed's teacher ...) the run builder masks the held-out items out of that softmax
   (:func:`exclude_from_softmax`);
4. :func:`guard` (end of the split) and :func:`guard_model` (after the model is built) raise :class:`ColdStartLeak`
   naming the first held-out item that reaches a fit: a split, the sampler, the hook's tokenizer, external
   embeddings written for another held-out set, a model's own codes (PRORec's stage I), the candidates of a
   training softmax or negatives (AlphaRec);
5. after training, models with ``add_items`` get the held-out items (TIGER family: codes from the stored tokenizer;
   AlphaRec: nothing to add, its text mapping already scores every item) and :func:`evaluate` ranks all items for
   every test interaction, reporting Recall@K / NDCG@K separately for held-out targets and for the rest, and the
   share of held-out items in the top K;
6. with ``coldstart_epsilon`` set, models that decode semantic IDs rank new items by the paper's rule
   (:func:`epsilon_retrieval`; plain beam search otherwise), and :func:`prefix_diagnostics` says why held-out targets
   are or are not retrieved. :func:`leak_counts` counts what :func:`guard` checks (all zero under the protocol),
   for reports; :func:`selection_data` is the validation split on which epsilon can be chosen.

:func:`content_knn_scores` is TIGER's "Semantic_KNN" baseline: the mean cosine similarity between the text
embeddings of the user's last items and every item's; :func:`code_embedding_vectors` is a dense item representation
of a trained generative model for the same kind of retrieval.
"""

import logging
import math

import numpy as np
import torch

from recbole_genrec.errors import ColdStartLeak

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


class HeldOutSoftmax(torch.nn.Module):
    """A RecBole ``loss_fct`` (cross-entropy over item logits) in which held-out items are no candidates: their logits
    are ``-inf``, so they get probability 0 and no gradient. Logits narrower than the catalogue pass unchanged."""

    def __init__(self, loss_fct, held, n_items):
        super().__init__()
        self.cross_entropy = loss_fct
        self.register_buffer("held", torch.as_tensor(held, dtype=torch.long).clone(), persistent=False)  # [n_held]
        self.n_items = int(n_items)

    def forward(self, logits, target):
        if logits.size(-1) >= self.n_items:  # [..., n_items (+ special tokens)]: scores of every item
            logits = logits.index_fill(-1, self.held.to(logits.device), float("-inf"))
        return self.cross_entropy(logits, target)


def _item_softmaxes(model):
    """``(name, module)`` of every module of ``model`` whose ``loss_fct`` is a cross-entropy over its items."""
    for name, module in list(model.named_modules()):
        if isinstance(getattr(module, "loss_fct", None), (torch.nn.CrossEntropyLoss, HeldOutSoftmax)) \
                and hasattr(module, "n_items"):
            yield name, module


def exclude_from_softmax(model, held):
    """Every RecBole cross-entropy ``loss_fct`` in ``model`` (a CE-trained model, CollabEmbed's teacher) ranks no
    held-out item from now on (:class:`HeldOutSoftmax`)."""
    for _, module in _item_softmaxes(model):
        if isinstance(module.loss_fct, torch.nn.CrossEntropyLoss):
            device = next(module.parameters()).device  # the logits' device: no copy per training step
            module.loss_fct = HeldOutSoftmax(module.loss_fct, held.to(device), module.n_items)
            logger.info(f"cold start: {type(module).__name__}'s cross-entropy ranks every item but the "
                        f"{held.numel()} held-out ones (their logits are masked)")
    return model


def softmax_leaks(model, held):
    """``{"held_out", "source"}``: held-out items that are candidates of a training softmax of ``model``: the
    columns that get a gradient when each ``loss_fct`` over item logits scores one warm target."""
    held = torch.as_tensor(held, dtype=torch.long).cpu()
    found, sources = set(), []
    for name, module in _item_softmaxes(model):
        warm = torch.ones(module.n_items, dtype=torch.bool)
        warm[held], warm[0] = False, False
        logits = torch.zeros(1, module.n_items, requires_grad=True)  # [1, n_items]
        module.loss_fct(logits, warm.nonzero()[:1, 0]).backward()
        found |= set(held[logits.grad[0, held] != 0].tolist())
        sources.append(f"{type(module).__name__}.loss_fct" + (f" ({name})" if name else ""))
    if not sources and str(getattr(model, "loss_type", "")) == "CE":  # a full softmax that is no loss_fct (BERT4Rec)
        return {"held_out": int(held.numel()), "source": f"{type(model).__name__}'s own cross-entropy over every item"}
    return {"held_out": len(found), "ids": sorted(found),
            "source": ", ".join(sources) or "none: the model trains without a softmax over items"}


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
    """Assert that a model built on the prepared data fits no held-out item: codes of its own (PRORec's stage I),
    the candidates of its training softmax (:func:`softmax_leaks`) and the negatives it draws itself (AlphaRec)."""
    held = data.coldstart["held_out"]
    softmax = softmax_leaks(model, held)
    if softmax["held_out"]:
        if "ids" not in softmax:
            raise ColdStartLeak(f"cold start: {softmax['source']} ranks the held-out items as candidates and cannot "
                                f"be masked; train {type(model).__name__} with loss_type: BPR under genrec_coldstart")
        _leak(data.dataset, softmax["ids"], f"the training softmax of {softmax['source']}")
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
def _top(scores, history_index, n_items, k):
    """``torch.topk`` of one batch's scores `(B, n_items)` on the CPU, padding and (general models) the user's
    training items masked as RecBole masks them."""
    scores = scores.view(-1, n_items).float().clone()  # [B, n_items]
    if history_index is not None:  # general models: RecBole masks the user's training items
        scores[history_index] = float("-inf")
    scores[:, 0] = float("-inf")
    return torch.topk(scores.cpu(), min(k, n_items), dim=1)


def _cutoffs(k):
    ks = sorted({int(x) for x in (k if isinstance(k, (list, tuple)) else [k])})
    if not ks or ks[0] < 1:
        raise ValueError(f"cut-offs must be integers >= 1, got {k}")
    return ks


@torch.no_grad()
def evaluate(score_fn, test_data, held, k=10, n_items=None):
    r"""Full-ranking metrics on ``test_data``, split by whether the target is a held-out item.

    Args:
        score_fn: ``interaction -> scores (B, n_items)`` (e.g. ``model.full_sort_predict``), or ``-> {K: scores}``
            when the ranking depends on the cut-off (:func:`epsilon_retrieval` caps new items at ``floor(eps * K)``).
        test_data: a RecBole full-sort evaluation dataloader.
        held (`LongTensor`): internal ids of the held-out items.
        k: a cut-off or a list of them.
    Returns:
        dict: ``{"held_out": {"Recall@K", "NDCG@K" for every K, "targets"}, "warm": {...}, "all": {...},
        "held_out_share@K": mean share of held-out items among the top-K of every test user}``. Ties in the
        scores are broken by ``torch.topk``; items scored ``-inf`` never count as hits.
    """
    ks = _cutoffs(k)
    n_items = n_items or test_data._dataset.item_num
    is_held = torch.zeros(n_items, dtype=torch.bool)
    is_held[held] = True
    hits = {K: {"held_out": [], "warm": []} for K in ks}
    gains = {K: {"held_out": [], "warm": []} for K in ks}
    shares = {K: [] for K in ks}
    for batch in test_data:
        interaction, history_index, positive_u, positive_i = batch
        raw = score_fn(interaction)
        if isinstance(raw, dict):  # a ranking per cut-off
            ranked = {K: _top(raw[K], history_index, n_items, K) for K in ks}
        else:  # one ranking: its top max(K) serves every cut-off
            top_scores, top = _top(raw, history_index, n_items, ks[-1])
            ranked = {K: (top_scores[:, :K], top[:, :K]) for K in ks}
        users, targets = torch.as_tensor(positive_u).long(), torch.as_tensor(positive_i).long().cpu()
        group = is_held[targets]  # [P]
        for K in ks:
            top_scores, top = ranked[K]
            real = torch.isfinite(top_scores)  # [B, K]
            shares[K].append((is_held[top] & real).sum(dim=1).float() / K)
            match = (top[users] == targets.unsqueeze(1)) & real[users]  # [P, K]
            hit = match.any(dim=1).float()
            gain = hit / torch.log2(match.float().argmax(dim=1) + 2.0)
            for name, mask in (("held_out", group), ("warm", ~group)):
                hits[K][name].append(hit[mask])
                gains[K][name].append(gain[mask])
    out = {}
    for name in ("held_out", "warm", "all"):
        out[name] = {}
        for K in ks:
            parts = ("held_out", "warm") if name == "all" else (name,)
            h = torch.cat([t for p in parts for t in hits[K][p]] or [torch.zeros(0)])
            g = torch.cat([t for p in parts for t in gains[K][p]] or [torch.zeros(0)])
            out[name][f"Recall@{K}"] = float(h.mean()) if h.numel() else float("nan")
            out[name][f"NDCG@{K}"] = float(g.mean()) if g.numel() else float("nan")
        out[name]["targets"] = int(h.numel())
    for K in ks:
        out[f"held_out_share@{K}"] = float(torch.cat(shares[K]).mean()) if shares[K] else float("nan")
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
    (metrics rounded to ``places`` decimals, RecBole's ``metric_decimal_place``).

    Metrics at ``k`` and the config's ``topk``. A model with semantic IDs is ranked by one beam search per test
    batch: with ``coldstart_epsilon`` set, ``metrics`` is the paper's retrieval (:func:`epsilon_retrieval`) and
    ``metrics_plain`` plain beam search; ``diagnostics`` is :func:`prefix_diagnostics`."""
    config = dataset.config
    topk = config["topk"] if isinstance(config["topk"], (list, tuple)) else [config["topk"]]
    ks = _cutoffs([k] + list(topk))
    epsilon = config["coldstart_epsilon"]
    was_training = model.training
    model.eval()
    try:
        added = add_held_out_items(model, dataset, info["held_out"])
        extra = {}
        if hasattr(model, "code_table"):
            plain = ScoreCache(model.full_sort_predict)  # one beam search per batch serves every ranking below
            groups = prefix_groups(prefix_codes(model, dataset, info["held_out"]))
            metrics = evaluate(plain, test_data, info["held_out"], k=ks)
            if epsilon is not None:
                extra["metrics_plain"] = metrics
                metrics = evaluate(epsilon_retrieval(plain, groups, info["held_out"], epsilon, ks), test_data,
                                   info["held_out"], k=ks)
            extra["diagnostics"] = prefix_diagnostics(plain, test_data, info["held_out"], groups, ks)
        else:
            if epsilon is not None:
                raise ValueError(f"coldstart_epsilon={epsilon} needs a model that decodes semantic IDs by beam search "
                                 f"(TIGER, DiscRec, PRORec); {type(model).__name__} does not: set coldstart_epsilon: ~")
            metrics = evaluate(model.full_sort_predict, test_data, info["held_out"], k=ks)
    finally:
        model.train(was_training)
    metrics = _rounded(metrics, places)
    if "metrics_plain" in extra:
        extra["metrics_plain"] = _rounded(extra["metrics_plain"], places)
    out = {key: value for key, value in info.items() if key != "held_out"}
    out.update({"add_items": added, "epsilon": epsilon, "metrics": metrics, **extra})
    logger.info(f"cold start @{k}: held-out {metrics['held_out']}, warm {metrics['warm']}, "
                f"held-out share of the top-{k} {metrics[f'held_out_share@{k}']}"
                f"{'' if epsilon is None else f' (epsilon {epsilon})'}; {added}")
    return out


# ============================================================================= paper's retrieval, diagnostics, leaks
# `coldstart_epsilon` (properties/overall.yaml) turns on the TIGER paper's retrieval of new items for models with
# semantic IDs: a new item whose first codes (all but the collision level: TIGER's three RQ codes) equal those of a
# decoded item is admitted, ranked right below the best decoded item it matches (or at its own beam score if the beam
# generated it), and at most floor(epsilon * K) new items stay in the top K, the best ones; the other new items get
# -inf. epsilon = 0 ranks no new item; ~ keeps plain beam search (new items compete with their full code tuples).
def model_codes(model):
    """The code table `(n_items, L)` of a model with semantic IDs (``code_table``; RPG: ``codes``), else ``None``."""
    if hasattr(model, "code_table"):
        return model.code_table.codes
    codes = getattr(model, "codes", None)
    return codes if torch.is_tensor(codes) and codes.dim() == 2 else None


def prefix_length(model):
    """Codes that make a prefix: all but the collision level of a code table (TIGER: 3 of 4), else the first 3."""
    codes = model_codes(model)
    return codes.size(1) - 1 if hasattr(model, "code_table") else min(3, codes.size(1))


def prefix_codes(model, dataset, new_items):
    """`(n_items, p)` prefixes (:func:`prefix_length`); ``-1`` rows for items without one.

    A held-out item that ``add_items`` skipped (its collision code would be past the trained vocabulary) still has a
    prefix: the model's ``new_item_codes`` gives it (the stored tokenizer for the TIGER family)."""
    codes = model_codes(model).detach().cpu().clone()  # [n_items, L]
    new_items = torch.as_tensor(new_items, dtype=torch.long).cpu()
    missing = new_items[(codes[new_items] < 0).any(dim=1)]
    if missing.numel() and hasattr(model, "new_item_codes"):
        from recbole_genrec.preprocess.features import item_embeddings

        codes[missing] = torch.as_tensor(model.new_item_codes(item_embeddings(dataset)[missing].numpy()),
                                         dtype=torch.long)
    prefixes = codes[:, :prefix_length(model)]
    prefixes[(prefixes < 0).any(dim=1)] = -1
    prefixes[0] = -1  # padding
    return prefixes


def prefix_groups(prefixes):
    """`(n_items,)` id of every item's prefix (equal prefixes, equal ids), ``-1`` for items without one."""
    groups = torch.full((prefixes.size(0),), -1, dtype=torch.long)
    coded = (prefixes >= 0).all(dim=1)
    if coded.any():
        groups[coded] = torch.unique(prefixes[coded], dim=0, return_inverse=True)[1]
    return groups


def new_item_candidates(scores, groups, new_items):
    r"""Scores the new items would get under the paper's rule, before the epsilon cap.

    Args:
        scores (`(B, n_items)`): a plain ranking, ``-inf`` for items not decoded (outside the beam).
        groups (`(n_items,)`): :func:`prefix_groups`.
        new_items (`(M,)`): ids of the new items.
    Returns:
        `(B, M)`: the larger of a new item's own score and the score right below (``nextafter``) the best decoded
        item with its prefix; ``-inf`` when neither exists (not admitted).
    """
    n_groups = int(groups.max()) + 1 if groups.numel() else 0
    index = groups.masked_fill(groups < 0, n_groups).expand(scores.size(0), -1)  # [B, n_items] (-1 -> dump slot)
    best = torch.full((scores.size(0), n_groups + 1), float("-inf"))
    best.scatter_reduce_(1, index, scores, reduce="amax")  # [B, G + 1] best decoded score of every prefix
    mine = groups[new_items]  # [M]
    inherited = best[:, mine.clamp(min=0)].masked_fill((mine < 0).unsqueeze(0), float("-inf"))  # [B, M]
    below = torch.nextafter(inherited, torch.tensor(float("-inf")))  # ranked right below the item it matches
    return torch.maximum(scores[:, new_items], below)


def n_new_allowed(epsilon, k):
    """floor(epsilon * k), robust to binary fractions (0.29 * 100 is 28.999...)."""
    return int(math.floor(float(epsilon) * k + 1e-9))


def epsilon_scores(scores, groups, new_items, epsilon, ks):
    """``{K: (B, n_items) scores}``: ``scores`` with the new items ranked by the paper's rule, at most
    ``floor(epsilon * K)`` of them (the best) in the top K; every other new item ``-inf``."""
    scores = scores.float().cpu()
    new_items = torch.as_tensor(new_items, dtype=torch.long)
    candidates = new_item_candidates(scores, groups, new_items)  # [B, M]
    base = scores.clone()
    base[:, new_items] = float("-inf")
    out = {}
    for k in ks:
        ranked = base.clone()
        n_keep = min(n_new_allowed(epsilon, k), new_items.numel())
        if n_keep > 0:
            values, picked = torch.topk(candidates, n_keep, dim=1)  # [B, n_keep] the best new items per user
            ranked.scatter_(1, new_items[picked], values)
        out[k] = ranked
    return out


def check_epsilon(epsilon):
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"coldstart_epsilon={epsilon!r} must be a number in [0, 1] (the largest share of new items "
                         f"in the top K; TIGER paper: 0.1) or ~ for plain beam search")
    return float(epsilon)


def epsilon_retrieval(score_fn, groups, new_items, epsilon, ks):
    """``interaction -> {K: scores}`` for :func:`evaluate`: :func:`epsilon_scores` over ``score_fn``'s ranking."""
    epsilon = check_epsilon(epsilon)
    ks = _cutoffs(ks)
    n_items = groups.numel()

    def ranked(interaction):
        return epsilon_scores(score_fn(interaction).view(-1, n_items), groups, new_items, epsilon, ks)

    return ranked


class ScoreCache:
    """``score_fn`` computed once per batch: a later call with the same interaction returns the stored scores, so that
    several rankings of one beam search (epsilon values, diagnostics) cost one beam search. Beam scores are stored
    sparsely (their finite entries)."""

    def __init__(self, score_fn):
        self.score_fn = score_fn
        self.store = {}

    @staticmethod
    def _key(interaction):
        import hashlib

        digest = hashlib.sha1()
        for name in sorted(interaction.interaction):
            value = interaction[name]
            if torch.is_tensor(value):
                digest.update(name.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def __call__(self, interaction):
        key = self._key(interaction)
        if key not in self.store:
            scores = self.score_fn(interaction).float().cpu()
            finite = torch.isfinite(scores)
            self.store[key] = scores if finite.all() else (scores.shape, finite.nonzero(as_tuple=True), scores[finite])
        stored = self.store[key]
        if torch.is_tensor(stored):
            return stored.clone()
        shape, where, values = stored
        scores = torch.full(shape, float("-inf"))
        scores[where] = values
        return scores


def choose_epsilon(score_fn, valid_data, held, groups, candidates, k=10, metric="NDCG@10"):
    """``(epsilon, {epsilon: metrics})``: the candidate with the best ``metric`` over all validation targets (warm
    and held-out), the smallest on ties. ``valid_data`` must hold held-out targets: :func:`selection_data`."""
    ks = _cutoffs(k)
    results = {float(e): evaluate(epsilon_retrieval(score_fn, groups, held, e, ks), valid_data, held, ks)
               for e in candidates}
    best = max(sorted(results), key=lambda e: (results[e]["all"][metric], -e))
    return best, results


def selection_data(config):
    """RecBole's validation split as built, held-out targets included (the protocol's validation loader drops them):
    the data on which epsilon is chosen, never trained on nor used for early stopping. Its histories may contain
    held-out items, as the test's do. Builds the dataset of ``config`` again (a RecBole dataset builds once)."""
    from recbole.data.utils import create_samplers, get_dataloader

    from recbole_genrec.data import create_dataset

    dataset = create_dataset(config)
    built = dataset.build()
    valid_sampler = create_samplers(config, dataset, built)[1]
    return get_dataloader(config, "valid")(config, built[1], valid_sampler, shuffle=False)


@torch.no_grad()
def prefix_diagnostics(score_fn, data, held, groups, ks=(10, 20, 50), n_decoded=None):
    r"""Why held-out targets are (not) retrieved, from a plain ranking ``score_fn`` (e.g. a :class:`ScoreCache`).

    For every test interaction whose target is held out: does the target have a prefix (:func:`prefix_groups`), does
    a warm item share it (else only the target's own beam score can rank it), is it decoded itself (finite score),
    is its prefix among the decoded items' prefixes (the paper's admission), and, when admitted, where it ranks:
    among all items with every admitted new item at its :func:`new_item_candidates` score (no epsilon cap), and
    among the admitted new items alone (rank r gets into the top K only when ``floor(epsilon * K) >= r``).
    ``n_decoded``: treat only the best ``n_decoded`` items of each ranking as decoded
    (for models that score every item); ``None`` = every finite score (a beam).
    """
    ks = _cutoffs(ks)
    n_items = groups.numel()
    new_items = torch.as_tensor(held, dtype=torch.long).cpu()
    column = torch.full((n_items,), -1, dtype=torch.long)
    column[new_items] = torch.arange(new_items.numel())
    warm_groups = groups[(groups >= 0) & (column < 0)]
    shares_warm = torch.zeros(int(groups.max()) + 2 if groups.numel() else 1, dtype=torch.bool)
    shares_warm[warm_groups] = True  # prefixes that some warm item has: the most the paper's rule can admit
    counts = {"held_out_targets": 0, "without_prefix": 0, "with_warm_prefix": 0, "target_decoded": 0,
              "prefix_decoded": 0}
    ranks, ranks_new = [], []
    for interaction, history_index, positive_u, positive_i in data:
        scores = score_fn(interaction).view(-1, n_items).float().cpu().clone()  # [B, n_items]
        if history_index is not None:
            scores[history_index] = float("-inf")
        scores[:, 0] = float("-inf")
        if n_decoded is not None:
            cut = torch.topk(scores, min(n_decoded, n_items), dim=1).values[:, -1:]  # [B, 1]
            scores = scores.masked_fill(scores < cut, float("-inf"))
        candidates = new_item_candidates(scores, groups, new_items)  # [B, M]
        warm = scores.clone()
        warm[:, new_items] = float("-inf")
        for u, t in zip(torch.as_tensor(positive_u).tolist(), torch.as_tensor(positive_i).tolist()):
            if column[t] < 0:
                continue
            counts["held_out_targets"] += 1
            if groups[t] < 0:
                counts["without_prefix"] += 1
                continue
            counts["with_warm_prefix"] += int(shares_warm[groups[t]])
            counts["target_decoded"] += int(torch.isfinite(scores[u, t]))
            mine = candidates[u, column[t]]
            if not torch.isfinite(mine):
                continue
            counts["prefix_decoded"] += 1
            ahead_new = int((candidates[u] > mine).sum())
            ranks.append(1 + int((warm[u] > mine).sum()) + ahead_new)
            ranks_new.append(1 + ahead_new)
    n = counts["held_out_targets"]
    out = dict(counts, prefix_decoded_rate=counts["prefix_decoded"] / n if n else float("nan"))
    out["admitted_rank"] = _rank_summary(ranks, ks)
    out["admitted_rank_among_new"] = _rank_summary(ranks_new, (1, 2, 5, 10))
    return out


def _rank_summary(ranks, cutoffs):
    if not ranks:
        return {"n": 0}
    values = torch.tensor(ranks, dtype=torch.float)
    out = {"n": len(ranks), "median": float(values.median()), "mean": float(values.mean())}
    out.update({f"within@{k}": float((values <= k).float().mean()) for k in cutoffs})
    return out


def code_embedding_vectors(model, prefixes):
    r"""A dense item representation of a trained model with semantic IDs: the mean of the trained input embeddings
    of an item's prefix codes (``prefixes``: :func:`prefix_codes`; the collision code carries no content).

    Returns `(n_items, d_model)` vectors and a `(n_items,)` mask of the items that have one."""
    has = (prefixes >= 0).all(dim=1)  # [n_items]
    offsets = model.code_table.offsets.cpu()[: prefixes.size(1)]  # [p] first token id of every level
    tokens = (prefixes.clamp(min=0) + offsets).to(model.backbone.shared.weight.device)  # [n_items, p]
    vectors = model.backbone.shared.weight.detach()[tokens].mean(dim=1).float().cpu()  # [n_items, d_model]
    return vectors.masked_fill(~has.unsqueeze(1), 0.0), has


def dense_scores(item_vectors, has_vector, item_seq, item_seq_len, last_n=1):
    """:func:`content_knn_scores` over ``item_vectors``; items without a vector get ``-inf``."""
    scores = content_knn_scores(item_vectors, item_seq, item_seq_len, last_n)
    return scores.masked_fill(~has_vector.to(scores.device).unsqueeze(0), float("-inf"))


# ----------------------------------------------------------------------------- leak counts
def _item_fields(dataset):
    """``(target field, history field or None, history length field or None)`` of a split."""
    list_field = getattr(dataset, "item_id_list_field", None)
    if list_field is None or list_field not in dataset.inter_feat.interaction:
        return dataset.iid_field, None, None
    return dataset.iid_field, list_field, dataset.item_list_length_field


def split_leaks(dataset, held):
    """``(targets, histories)``: samples of a split whose target is held out / whose history holds one."""
    inter = dataset.inter_feat
    target, history, length = _item_fields(dataset)
    n_targets = int(torch.isin(inter[target], held).sum())
    if history is None:
        return n_targets, 0
    positions = torch.arange(inter[history].size(1)).unsqueeze(0)  # [1, T]
    real = positions < inter[length].unsqueeze(1)  # [n, T]
    return n_targets, int((torch.isin(inter[history], held) & real).any(dim=1).sum())


def _restoring_rng(fn):
    """``fn()`` with the torch, numpy and Python random states restored afterwards (a check must not change a run)."""
    import random

    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            return fn()
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def negative_leaks(train_data, held, model=None):
    """``{"drawn", "held_out", "source"}``: held-out items among the training negatives.

    RecBole's sampler: every negative of one pass over the training loader; a model that draws its own
    (``sample_negatives``, AlphaRec): 64 users x 1,024 draws. Random states are restored afterwards."""
    held = held.cpu()
    dataset = train_data._dataset
    config = train_data.config
    neg_field = config["NEG_PREFIX"] + dataset.iid_field
    label = config["LABEL_FIELD"]

    def from_loader():
        generator = getattr(train_data, "generator", None)
        state = generator.get_state() if generator is not None else None
        drawn = found = 0
        for batch in train_data:
            if neg_field in batch.interaction:
                values = batch[neg_field].flatten()
            elif label in batch.interaction:  # point-wise sampling: negatives are rows labelled 0
                values = batch[dataset.iid_field][batch[label] == 0]
            else:
                break
            drawn += values.numel()
            found += int(torch.isin(values.cpu(), held).sum())
        if state is not None:
            generator.set_state(state)
        return drawn, found

    def from_model():
        users = torch.arange(1, 65, device=model.device) % max(int(model.n_users), 1)
        values = model.sample_negatives(users, 1024).flatten().cpu()
        return values.numel(), int(torch.isin(values, held).sum())

    if getattr(train_data, "_sampler", None) is not None and getattr(train_data, "neg_sample_num", 0):
        drawn, found = _restoring_rng(from_loader)
        return {"drawn": drawn, "held_out": found, "source": "RecBole's sampler, one pass over the training loader"}
    if model is not None and hasattr(model, "sample_negatives"):
        drawn, found = _restoring_rng(from_model)
        return {"drawn": drawn, "held_out": found, "source": f"{type(model).__name__}.sample_negatives"}
    return {"drawn": 0, "held_out": 0, "source": "none: the model trains without negatives"}


def leak_counts(config, dataset, train_data, valid_data, held, model=None):
    """Counts of every way a held-out item could reach a fit (all zero under the protocol).

    ``train_targets`` / ``valid_targets``: samples whose target is held out; ``train_histories`` /
    ``valid_histories``: samples whose history holds one; ``tokenizer_fit``: held-out items the hook's tokenizer
    coded (it codes exactly the items it was fitted on); ``model_codes``: held-out items with a code in the model's
    own table before ``add_items`` (call before it); ``softmax``: held-out candidates of the model's training softmax
    (:func:`softmax_leaks`); ``negatives``: held-out items among the training negatives (:func:`negative_leaks`). ``details`` says what each count looked at."""
    held = torch.as_tensor(held, dtype=torch.long).cpu()
    counts, details = {}, {}
    for name, loader in (("train", train_data), ("valid", valid_data)):
        counts[f"{name}_targets"], counts[f"{name}_histories"] = split_leaks(loader._dataset, held)
        details[f"{name}_samples"] = len(loader._dataset.inter_feat)
    if "sid" in list(config["genrec_features"]):
        from recbole_genrec.preprocess.features import item_codes

        codes = item_codes(dataset)
        counts["tokenizer_fit"] = int((codes[held] >= 0).all(dim=1).sum())
        details["tokenizer_coded_items"] = int((codes[1:] >= 0).all(dim=1).sum())
    else:
        counts["tokenizer_fit"] = 0
        details["tokenizer_coded_items"] = "no semantic-ID tokenizer (genrec_features has no sid)"
    codes = model_codes(model) if model is not None else None
    counts["model_codes"] = int((codes.cpu()[held] >= 0).all(dim=1).sum()) if codes is not None else 0
    softmax = softmax_leaks(model, held) if model is not None else {"held_out": 0, "source": "no model"}
    counts["softmax"] = softmax["held_out"]
    details["softmax"] = softmax["source"]
    negatives = negative_leaks(train_data, held, model)
    counts["negatives"] = negatives["held_out"]
    details["negatives"] = {k: v for k, v in negatives.items() if k != "held_out"}
    return dict(counts, details=details)


def ranking_for(config, model, dataset):
    """For ``python -m recbole_genrec.recommend`` on a cold-start run: give ``model`` the held-out items as
    :func:`report` does and return ``(held-out ids, rerank)``; ``rerank(scores (n,), k) -> scores`` applies
    ``coldstart_epsilon`` (identity when it is ~)."""
    held = held_out_ids(config, dataset)
    add_held_out_items(model, dataset, held)
    epsilon = config["coldstart_epsilon"]
    if epsilon is None or not hasattr(model, "code_table"):
        return held, lambda scores, k: scores
    groups = prefix_groups(prefix_codes(model, dataset, held))

    def rerank(scores, k):
        return epsilon_scores(scores.view(1, -1), groups, held, epsilon, [k])[k][0]

    return held, rerank
