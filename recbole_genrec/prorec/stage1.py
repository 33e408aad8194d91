# coding: utf-8
r"""PRORec stage I: cross-modality knowledge alignment and unified codes, with a content-hash cache.

Xiao et al., "Progressive Collaborative and Semantic Knowledge Fusion for Generative Recommendation" (PRORec,
arXiv 2502.06269; v3 renamed UNGER). Stage I learns an item embedding that carries both collaborative and semantic
knowledge and quantises it into one code tuple per item (the "unified code" that stage II generates).

1. **Data** (:mod:`recbole_genrec.prorec.data`): the users' *training* sequences, rebuilt from RecBole's training
   split, cut into windows of ``prorec_max_len + 1`` items, batched by similar length
   (:func:`length_bucketed_batches`). Validation/test targets never enter stage I.
2. **Model**: a SASRec-style causal encoder with item-ID embeddings :math:`E^{id}`
   (:class:`~recbole_genrec.prorec.encoder.CollabSequenceEncoder`) and an AdaLN adapter :math:`A` from the frozen
   language embedding :math:`E^{text}` (``item_embeddings(dataset)``) into the ID space
   (:class:`~recbole_genrec.prorec.adapter.AdaLNAdapter`).
3. **Loss** per step: next-item cross-entropy at every position over all item-ID embeddings (or, with
   ``prorec_stage1_negatives: N > 0``, a sampled softmax against N uniform negatives shared by the batch once the
   catalogue has more than ``2 N`` items: the full softmax dominates stage I's cost on large catalogues; default
   N = 1024, so ml-100k keeps the exact full softmax and amazon-beauty's 12k items use the sampled one), plus
   ``prorec_lambda`` times a symmetric InfoNCE (cosine / ``prorec_tau``) between :math:`E^{id}_i` and
   :math:`A(E^{text}_i)` over ``prorec_align_items`` items drawn uniformly from the catalogue (uniform rather than
   batch items, so that tail items are aligned too).
4. **Unified embedding** (``prorec_code_source: aligned``): :math:`[\hat E^{id}_i ; \widehat{A(E^{text}_i)}]`, the
   concatenation of the two aligned modalities, each L2-normalised so that neither dominates. Quantised with
   ``prorec_code_method`` (default ``rkmeans``: residual k-means, every level a codebook of its own over the
   residuals of the previous levels, so every level splits all items; ``hkmeans``: hierarchical k-means, children
   per node), ``prorec_code_levels`` x ``prorec_codebook_size`` (an int, or one size per level), and made unique
   with ``prorec_collision`` (default: TIGER's extra level).  Hierarchical k-means with 256 children per node on a
   12k-item catalogue leaves ~47 items per level-1 node, so level 2 already isolates almost every item and level 3
   is near-constant (benchmarks/README.md, PRORec stage I); the
   per-level usage and perplexity of every source are in ``stage1.json`` (``diagnostics``) and in the log, and
   :func:`level_usage_problems` names the levels that carry almost no information.
   Baselines (``prorec_code_source``): ``text`` = raw :math:`E^{text}`, ``id`` = raw :math:`E^{id}` of the same
   encoder (set ``prorec_lambda: 0`` for a purely collaborative ID embedding), ``concat`` = raw
   :math:`[E^{id}; E^{text}]` without alignment (the paper's "semantic domination" case).
5. **Diagnostic**: normalised mutual information between the first code level of every source and that of the
   ``text`` and ``id`` codes (all four sources are always quantised), logged and written to ``stage1.json``.

Everything is cached under ``<genrec cache root>/<dataset>/prorec/<key[:16]>/`` (``id_emb.npy``, ``adapted_text.npy``,
``codes-<source>.npy``, ``stage1.json``, and what encodes new items: ``adapter.safetensors`` and
``tokenizer-<source>.safetensors/.json``, see :mod:`recbole_genrec.tokenizers.artifact`), each file with the sidecar checksum of
:mod:`recbole_genrec.preprocess.cache`. The key hashes the item tokens, the training sequences, the language
embeddings, every stage-I hyperparameter and the seed, so a rerun with the same inputs skips stage I entirely.
Training runs inside ``torch.random.fork_rng`` with its own seed: whether stage I ran or was loaded from the cache,
the global RNG (and therefore stage II's initialisation) is the same.
"""

import hashlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from recbole_genrec.prorec.adapter import AdaLNAdapter, popularity_buckets
from recbole_genrec.prorec.data import item_counts, sequences_hash, user_sequences, windows
from recbole_genrec.prorec.encoder import CollabSequenceEncoder
from recbole_genrec.prorec.losses import next_item_loss, paired_info_nce, sampled_next_item_loss
from recbole_genrec import store
from recbole_genrec.preprocess import cache
from recbole_genrec import tokenizers
from recbole_genrec.tokenizers.artifact import FittedTokenizer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CODE_SOURCES = ("aligned", "text", "id", "concat")
# the stage-I config keys (defaults: properties/model/PRORec.yaml); every key is part of the cache key.
STAGE1_KEYS = (
    "prorec_hidden_size", "prorec_n_layers", "prorec_n_heads", "prorec_inner_size", "prorec_dropout", "prorec_max_len",
    "prorec_stage1_epochs", "prorec_stage1_batch_size", "prorec_stage1_lr", "prorec_stage1_weight_decay",
    "prorec_stage1_negatives", "prorec_lambda", "prorec_tau", "prorec_align_items", "prorec_adapter_hidden",
    "prorec_adaln_cond", "prorec_adaln_buckets", "prorec_code_method", "prorec_code_levels", "prorec_codebook_size",
    "prorec_collision", "prorec_code_params",
)


def stage1_params(config):
    r"""The stage-I hyperparameters of ``config``: a plain dict over :data:`STAGE1_KEYS`."""
    params = {key: config[key] for key in STAGE1_KEYS}
    params["prorec_code_params"] = dict(params["prorec_code_params"])
    return params


@dataclass
class Stage1Result:
    r"""Stage-I artifacts, rows indexed by RecBole internal item id (row 0 = padding).

    ``codes[source]``: int64 `(n_items, L')` (row 0 = -1); ``codebook_sizes[source]``: list of ``L'`` ints;
    ``id_emb`` `(n_items, d)` and ``adapted_text`` `(n_items, d)` float32; ``report``: NMI, timings, losses.
    """

    codes: dict
    codebook_sizes: dict
    id_emb: np.ndarray
    adapted_text: np.ndarray
    report: dict
    folder: str
    status: str = "built"
    files: dict = field(default_factory=dict)
    adapter_state: dict = field(default_factory=dict)  # only when built in this process (else read `files`)
    tokenizers: dict = field(default_factory=dict)  # source -> FittedTokenizer, idem


# ============================================================================= training
def alignment_stats(id_emb, adapted):
    r"""Mean cosine of matched `(N, d)` rows vs. of all unmatched pairs: ``{"matched": m, "unmatched": u}``."""
    a = torch.nn.functional.normalize(torch.as_tensor(id_emb, dtype=torch.float32), dim=-1)
    b = torch.nn.functional.normalize(torch.as_tensor(adapted, dtype=torch.float32), dim=-1)
    sim = a @ b.t()  # [N, N]
    n = sim.size(0)
    matched = sim.diagonal().mean().item()
    unmatched = ((sim.sum() - sim.diagonal().sum()) / max(n * n - n, 1)).item()
    return {"matched": matched, "unmatched": unmatched}


def build_modules(params, n_items, text_dim):
    r"""Fresh ``(encoder, adapter)`` for the given hyperparameters."""
    encoder = CollabSequenceEncoder(
        n_items, params["prorec_max_len"], hidden_size=params["prorec_hidden_size"],
        n_layers=params["prorec_n_layers"], n_heads=params["prorec_n_heads"],
        inner_size=params["prorec_inner_size"], dropout=params["prorec_dropout"],
    )
    adapter = AdaLNAdapter(text_dim, params["prorec_hidden_size"], hidden_dim=params["prorec_adapter_hidden"],
                           cond=params["prorec_adaln_cond"], n_buckets=params["prorec_adaln_buckets"])
    return encoder, adapter


def length_bucketed_batches(lengths, batch_size, generator, pool=50):
    r"""Random batches of similar-length windows: a list of `(B,)` row-index tensors.

    The rows are shuffled, cut into pools of ``pool`` batches, sorted by length inside each pool and split into
    batches, whose order is shuffled again. Trailing padding is then cut per batch, so short histories (most of a
    5-core Amazon dataset) do not pay for the longest one.
    """
    order = torch.randperm(lengths.numel(), generator=generator)
    batches = []
    for start in range(0, order.numel(), batch_size * pool):
        chunk = order[start:start + batch_size * pool]
        chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
        batches.extend(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def train_alignment(train_windows, text_emb, buckets, params, seed, device="cpu", show_progress=False, held=None):
    r"""Jointly train the collaborative encoder (next-item CE) and the adapter (InfoNCE alignment).

    Args:
        train_windows (`torch.LongTensor` of shape `(W, max_len + 1)`): right-padded training windows.
        text_emb (`torch.FloatTensor` of shape `(n_items, D)`): language embeddings (row 0 zeros).
        buckets (`torch.LongTensor` of shape `(n_items,)`): popularity buckets for the AdaLN condition.
        params (`dict`): :func:`stage1_params`; seed (`int`); device.
        held (`torch.LongTensor`, *optional*): cold-start items held out of stage I: never a softmax candidate, a
            sampled negative or an aligned pair.
    Returns:
        ``(encoder, adapter, history)``; history = per-epoch mean ``next_item`` and ``align`` losses.
    """
    n_items = text_emb.size(0)
    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    encoder, adapter = build_modules(params, n_items, text_emb.size(1))
    encoder, adapter = encoder.to(device), adapter.to(device)
    text_emb, buckets = text_emb.to(device), buckets.to(device)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(adapter.parameters()),
                                 lr=params["prorec_stage1_lr"], weight_decay=params["prorec_stage1_weight_decay"])
    lam, tau = float(params["prorec_lambda"]), float(params["prorec_tau"])
    batch_size = int(params["prorec_stage1_batch_size"])
    pool = None  # items stage I may fit: all but padding, and but the held-out ones under cold start
    if held is not None and held.numel():
        keep = torch.ones(n_items, dtype=torch.bool)
        keep[0] = False
        keep[held] = False
        pool = keep.nonzero().flatten()  # [n_items - 1 - n_held]
    n_align = min(int(params["prorec_align_items"]), n_items - 1 if pool is None else pool.numel())
    n_negatives = int(params["prorec_stage1_negatives"] or 0)
    if n_negatives and n_items - 1 <= 2 * n_negatives:
        n_negatives = 0  # small catalogue: the exact full softmax costs about as much as the sampled one
    lengths = (train_windows != 0).sum(dim=1)  # [W]
    history = {"next_item": [], "align": []}
    epochs = tqdm(range(int(params["prorec_stage1_epochs"])), desc="PRORec stage I", disable=not show_progress)
    for _ in epochs:
        encoder.train()
        adapter.train()
        sums, steps = [0.0, 0.0], 0
        for rows in length_bucketed_batches(lengths, batch_size, generator):
            batch = train_windows[rows]  # [B, max_len+1], right-padded
            batch = batch[:, :int((batch != 0).sum(dim=1).max())].to(device)  # [B, T+1] trailing padding cut
            hidden = encoder(batch[:, :-1])  # [B, T, d]
            targets = batch[:, 1:]  # [B, T]
            real = targets != 0  # logits only where there is a target: [n_targets, n_items]
            if n_negatives > 0:
                if pool is None:
                    negatives = torch.randint(1, n_items, (n_negatives,), generator=generator)  # [N]
                else:
                    negatives = pool[torch.randint(0, pool.numel(), (n_negatives,), generator=generator)]
                loss_ce = sampled_next_item_loss(hidden[real], targets[real], encoder.item_embedding.weight,
                                                  negatives.to(device))
            else:
                logits = encoder.scores(hidden[real])  # [n_targets, n_items]
                if pool is not None:
                    logits[:, held.to(device)] = float("-inf")  # held-out items are no candidates
                loss_ce = next_item_loss(logits, targets[real])
            if pool is None:
                items = (torch.randperm(n_items - 1, generator=generator)[:n_align] + 1).to(device)  # [n_align]
            else:
                items = pool[torch.randperm(pool.numel(), generator=generator)[:n_align]].to(device)  # [n_align]
            loss_align = paired_info_nce(encoder.item_embedding(items), adapter(text_emb[items], buckets[items]), tau)
            loss = loss_ce + lam * loss_align
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sums[0] += loss_ce.item()
            sums[1] += loss_align.item()
            steps += 1
        history["next_item"].append(sums[0] / max(steps, 1))
        history["align"].append(sums[1] / max(steps, 1))
        epochs.set_postfix(next_item=f"{history['next_item'][-1]:.4f}", align=f"{history['align'][-1]:.4f}")
    encoder.eval()
    adapter.eval()
    return encoder, adapter, history


# ============================================================================= quantisation
def source_embeddings(id_emb, adapted, text_emb):
    r"""Item vectors (rows 1..n-1, no padding) to quantise for every code source: ``{source: (n-1, ·)}``."""
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    id_rows, text_rows, adapted_rows = id_emb[1:], text_emb[1:], adapted[1:]
    return {
        "aligned": np.concatenate([unit(id_rows), unit(adapted_rows)], axis=1),
        "text": text_rows,
        "id": id_rows,
        "concat": np.concatenate([id_rows, text_rows], axis=1),
    }


def quantise(emb, params, seed, show_progress=False, fit_rows=None):
    r"""Codes of `(N, D)` item vectors (``prorec_code_method``) -> ``(codes (N+1, L') with row 0 = -1, sizes, diag,
    FittedTokenizer)``. ``fit_rows`` (row indices of ``emb``): the tokenizer is fitted on those only and the other
    items get ``-1`` rows (cold start: added after training, like the hook's held-out items)."""
    fit_rows = np.arange(len(emb)) if fit_rows is None else np.asarray(fit_rows)
    codes, info = tokenizers.generate_semantic_ids(
        np.ascontiguousarray(emb[fit_rows], dtype=np.float32), method=str(params["prorec_code_method"]),
        n_levels=int(params["prorec_code_levels"]),
        codebook_size=params["prorec_codebook_size"], collision=str(params["prorec_collision"]), seed=int(seed),
        device="cpu", show_progress=show_progress, **params["prorec_code_params"],
    )
    padded = np.full((len(emb) + 1, codes.shape[1]), -1, dtype=np.int64)  # row 0 = padding
    padded[fit_rows + 1] = codes
    diagnostics = dict(info["diagnostics"])
    levels = int(params["prorec_code_levels"])
    diagnostics["unified_levels"] = level_usage(codes[:, :levels])  # the quantiser's levels, before collisions
    sizes = [int(k) for k in info["codebook_sizes"]]
    return padded, sizes, diagnostics, FittedTokenizer(info["tokenizer"], codes, sizes, str(params["prorec_collision"]))


def level_usage(codes):
    r"""Per level of `(N, L)` codes: distinct codes, perplexity of the marginal code distribution, the perplexity
    *given the previous levels' prefix* (how many ways a level splits the items that share a prefix: 1.0 = the level
    adds nothing) and ``max_split``, the most it could split them (``N / exp(H(prefix))``: a level cannot split items
    that the previous levels already set apart)."""
    codes = np.asarray(codes, dtype=np.int64)
    n = codes.shape[0]
    out = []
    for level in range(codes.shape[1]):
        _, counts = np.unique(codes[:, level], return_counts=True)
        marginal = float(np.exp(_entropy(counts)))
        if level == 0:
            conditional, h_prefix = marginal, 0.0
        else:
            _, prefix_ids = np.unique(codes[:, :level], axis=0, return_inverse=True)
            _, joint_ids = np.unique(codes[:, : level + 1], axis=0, return_inverse=True)
            h_joint = _entropy(np.bincount(joint_ids.reshape(-1)))
            h_prefix = _entropy(np.bincount(prefix_ids.reshape(-1)))
            conditional = float(np.exp(h_joint - h_prefix))
        out.append({"level": level + 1, "distinct": int(counts.size), "perplexity": marginal,
                    "conditional_perplexity": conditional, "max_split": float(n * np.exp(-h_prefix))})
    return out


def _entropy(counts):
    p = np.asarray(counts, dtype=np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def level_usage_problems(usage, min_conditional_perplexity=2.0):
    r"""Levels of a :func:`level_usage` list that are near-constant (given their prefix the level splits the items
    fewer than ``min_conditional_perplexity`` ways): a list of readable strings, empty when every level is used."""
    return [f"level {u['level']}: {u['distinct']} distinct codes, perplexity {u['perplexity']:.1f}, "
            f"{u['conditional_perplexity']:.2f} given the previous levels"
            + (f" (at most {u['max_split']:.2f}: the previous levels already set the items apart)"
               if "max_split" in u else "")
            for u in usage if u["conditional_perplexity"] < min_conditional_perplexity]


def nmi_report(codes):
    r"""NMI between the first code level of every source and of the ``text`` / ``id`` codes (rows 1..)."""
    coded = np.all([(c[1:] >= 0).all(axis=1) for c in codes.values()], axis=0)  # held-out items have no code
    first = {source: c[1:, 0][coded] for source, c in codes.items()}
    report = {}
    for source in ("aligned", "concat"):
        for reference in ("text", "id"):
            report[f"{source}~{reference}"] = tokenizers.normalized_mutual_info(first[source], first[reference])
    report["text~id"] = tokenizers.normalized_mutual_info(first["text"], first["id"])
    return report


# ============================================================================= cache
def stage1_key(dataset, sequences, text_emb, params, seed, held_key=None):
    r"""Content hash of everything stage I depends on (``held_key``: the cold-start set it never fits)."""
    tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
    text = np.ascontiguousarray(text_emb, dtype=np.float32)
    inputs = {
        "kind": "prorec_stage1",
        "format": FORMAT_VERSION,
        "items": cache.strings_hash(tokens),
        "train_sequences": sequences_hash(sequences),
        "text_emb": {"shape": list(text.shape), "sha256": hashlib.sha256(text.tobytes()).hexdigest()},
        "params": params,
        "seed": int(seed),
    }
    if held_key is not None:
        inputs["held_out"] = held_key
    return cache.content_key(inputs)


def _paths(folder):
    return store.prorec_paths(folder, CODE_SOURCES)


def _load(folder, key):
    r"""The cached result in ``folder`` if every artifact is intact and matches ``key``, else ``(None, status)``."""
    paths = _paths(folder)
    statuses = {name: cache.check_artifact(path, key) for name, path in paths.items()}
    bad = {name: s for name, s in statuses.items() if s != "hit"}
    if bad:
        return None, next(iter(bad.values()))
    report = cache.load_json(paths["report"])
    codes = {s: cache.load_npy(paths["codes", s]).astype(np.int64) for s in CODE_SOURCES}
    return Stage1Result(codes=codes, codebook_sizes={s: list(report["codebook_sizes"][s]) for s in CODE_SOURCES},
                        id_emb=cache.load_npy(paths["id_emb"]).astype(np.float32),
                        adapted_text=cache.load_npy(paths["adapted_text"]).astype(np.float32),
                        report=report, folder=folder, status="hit", files=paths), "hit"


def _save(result, key):
    from safetensors.torch import save as st_save

    paths = _paths(result.folder)
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in result.adapter_state.items()})
    cache.write_artifact(paths["adapter"], lambda f: f.write(blob), key, {"what": "PRORec stage-I adapter"})
    for source, tokenizer in result.tokenizers.items():
        store.save_tokenizer(store.prorec_tokenizer_stem(result.folder, source), tokenizer, key, {"source": source})
    cache.save_npy(paths["id_emb"], result.id_emb, key, {"what": "PRORec stage-I item-ID embeddings"})
    cache.save_npy(paths["adapted_text"], result.adapted_text, key, {"what": "PRORec stage-I adapted text"})
    for source in CODE_SOURCES:
        cache.save_npy(paths["codes", source], result.codes[source], key,
                       {"source": source, "codebook_sizes": result.codebook_sizes[source]})
    cache.save_json(paths["report"], result.report, key)  # written last: its presence marks a complete build
    result.files = paths


# ============================================================================= entry point
def build_stage1(dataset, text_emb, params, seed, device="cpu", show_progress=False, folder=None, held=None):
    r"""Run stage I from scratch: train, embed, quantise every source and compute the NMI report (``held``: cold-start
    item ids that nothing is fitted on)."""
    start = time.perf_counter()
    sequences = user_sequences(dataset)
    n_items = int(dataset.item_num)
    counts = item_counts(sequences, n_items)  # [n_items]
    buckets = popularity_buckets(counts, int(params["prorec_adaln_buckets"]))
    text = torch.as_tensor(np.asarray(text_emb, dtype=np.float32))  # [n_items, D]
    train_windows = windows(sequences, int(params["prorec_max_len"]))
    logger.info(f"PRORec stage I: {len(sequences)} training sequences -> {train_windows.size(0)} windows, "
                f"{n_items - 1} items, text dim {text.size(1)}")
    encoder, adapter, history = train_alignment(train_windows, text, buckets, params, seed, device, show_progress,
                                                held)
    train_s = time.perf_counter() - start
    with torch.no_grad():
        id_emb = encoder.item_embedding.weight.detach().cpu().numpy().astype(np.float32)  # [n_items, d]
        adapted = adapter(text.to(next(adapter.parameters()).device), buckets.to(next(adapter.parameters()).device))
        adapted = adapted.cpu().numpy().astype(np.float32)  # [n_items, d]
    id_emb[0] = 0.0
    adapted[0] = 0.0
    codes, sizes, diagnostics, fitted = {}, {}, {}, {}
    fit_rows = None  # rows of the real items (id - 1) the quantiser is fitted on
    if held is not None and held.numel():
        fit_rows = np.setdiff1d(np.arange(n_items - 1), held.numpy() - 1)
    quant_start = time.perf_counter()
    for source, emb in source_embeddings(id_emb, adapted, text.numpy()).items():
        codes[source], sizes[source], diagnostics[source], fitted[source] = quantise(emb, params, seed, show_progress,
                                                                                     fit_rows)
    quant_s = time.perf_counter() - quant_start
    report = {
        "nmi_first_level": nmi_report(codes),
        "codebook_sizes": sizes,
        "alignment": alignment_stats(*(x[1:] if fit_rows is None else x[1:][fit_rows] for x in (id_emb, adapted))),
        "history": history,
        "diagnostics": diagnostics,
        "timings": {"train_s": round(train_s, 3), "quantise_s": round(quant_s, 3),
                    "total_s": round(time.perf_counter() - start, 3)},
        "n_items": n_items - 1,
        "n_sequences": len(sequences),
        "n_windows": int(train_windows.size(0)),
        "params": params,
        "seed": int(seed),
    }
    return Stage1Result(codes=codes, codebook_sizes=sizes, id_emb=id_emb, adapted_text=adapted, report=report,
                        folder=folder or "", status="built", adapter_state=adapter.cpu().state_dict(),
                        tokenizers=fitted)


def log_report(result):
    nmi = result.report["nmi_first_level"]
    align = result.report["alignment"]
    logger.info(
        "PRORec stage I (%s): NMI(first level) aligned~text=%.4f aligned~id=%.4f concat~text=%.4f concat~id=%.4f "
        "text~id=%.4f; cosine matched=%.4f unmatched=%.4f; codebook sizes %s; %s",
        result.status, nmi["aligned~text"], nmi["aligned~id"], nmi["concat~text"], nmi["concat~id"], nmi["text~id"],
        align["matched"], align["unmatched"], result.codebook_sizes, result.report["timings"],
    )
    usage = (result.report.get("diagnostics") or {}).get("aligned", {}).get("unified_levels")
    if usage:
        logger.info("PRORec stage I aligned codes per level: " + "; ".join(
            f"level {u['level']}: {u['distinct']} codes, perplexity {u['perplexity']:.1f} "
            f"({u['conditional_perplexity']:.1f} given the prefix)" for u in usage))
        for problem in level_usage_problems(usage):
            fix = ("prorec_code_method: rkmeans, " if (result.report.get("params") or {}).get(
                "prorec_code_method") == "hkmeans" else "")
            logger.warning(f"PRORec stage I: a near-constant code level ({problem}): the items are already apart "
                           f"after the previous levels; use {fix}fewer prorec_code_levels or a smaller "
                           f"prorec_codebook_size per level (e.g. [256, 64, 16]) for this catalogue")


def run_stage1(config, dataset, text_emb):
    r"""Stage I for the *training* dataset ``dataset``, loaded from the cache when its inputs are unchanged.

    Args:
        config: RecBole config (``genrec_cache_dir``, ``seed``, ``device``, the ``prorec_*`` keys).
        dataset: RecBole's training dataset (``train_data.dataset``).
        text_emb (`torch.FloatTensor` of shape `(n_items, D)`): ``item_embeddings(dataset)``.
    Returns:
        :class:`Stage1Result` (``status`` is ``"hit"`` when loaded from the cache).
    """
    from recbole_genrec.data import coldstart

    params = stage1_params(config)
    seed = int(config["seed"])
    text = np.asarray(torch.as_tensor(text_emb, dtype=torch.float32).cpu().numpy())
    held, held_key = None, None
    if coldstart.enabled(config):  # the held-out items reach no fit of stage I (tokenizer included)
        held = coldstart.held_out_ids(config, dataset)
        held_key = coldstart.held_out_key(dataset.field2id_token[dataset.iid_field][held.numpy()])
    key = stage1_key(dataset, user_sequences(dataset), text, params, seed, held_key)
    root = store.prorec_root(store.store_dir(config))
    folder = store.prorec_dir(store.store_dir(config), key)
    with cache.locked(root):
        result, status = _load(folder, key)
        cache.report_status(f"PRORec stage I artifacts in {folder}", status)
        if result is None:
            device = "cuda" if str(config["device"]).startswith("cuda") else "cpu"
            devices = [torch.cuda.current_device()] if device == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                result = build_stage1(dataset, text, params, seed, device, bool(config["show_progress"]), folder, held)
            result.status = status if status != "missing" else "built"
            _save(result, key)
        else:
            logger.info(f"PRORec stage I: cache hit, skipping alignment training and quantisation ({folder})")
    log_report(result)
    return result
