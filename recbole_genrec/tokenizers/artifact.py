"""A fitted semantic-ID tokenizer that outlives its fit: tensors (safetensors) + JSON, never a pickle.

The preprocessing hook stores every tokenizer it fits as two content-hashed artifacts in the dataset's store::

    tokenizer-<sid16>.safetensors   weights: RQ-VAE state dict, residual k-means codebooks, or the hierarchical
                                    k-means tree (per level: node prefixes, child counts, centroids), plus
                                    ``codes`` [N, L'] = the final codes of the items it was fitted for (the
                                    collision state)
    tokenizer-<sid16>.json          method, hyperparameters, configured and final codebook sizes, collision rule

:class:`FittedTokenizer` loads them (``safetensors`` reads tensors only) and encodes any embedding of the same
text encoder into a code tuple. :meth:`FittedTokenizer.assign` gives *new* items unique codes with the rule the
fit used, never changing an existing item's code:

* ``extra_level`` (TIGER): the new item's extra code is one past the largest extra code already used by its
  first-``L`` tuple (= the number of items sharing it, since the fit numbers them ``0..m-1``);
* ``sinkhorn`` (LC-Rec): within the new item's prefix (first ``L-1`` codes) the existing items keep their last
  code; colliding new items move to free last-level codes by the same Sinkhorn plan + greedy rounding as the fit
  (:func:`~recbole_genrec.tokenizers.collisions.sinkhorn_plan`); a prefix with no free code left is an error;
* ``none``: the raw codes.

Encoding an existing item's embedding gives its stored code wherever the collision rule did not rewrite it (all of
the first ``L`` levels with ``extra_level``; every item that did not collide with ``sinkhorn`` / ``none``).
"""

import json
import logging

import numpy as np
import torch

from .collisions import _finite_costs, greedy_match, sinkhorn_plan
from .diagnostics import tuple_groups
from .kmeans import HierarchicalKMeansTokenizer, ResidualKMeansTokenizer, validate_embeddings
from .rqvae import RQVAE, RQVAETokenizer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_SUFFIX, META_SUFFIX = ".safetensors", ".json"


# ============================================================================= tensors <-> tokenizers
def tokenizer_tensors(tokenizer):
    """``(tensors {name: CPU tensor}, params {json})`` that rebuild a fitted tokenizer exactly."""
    tokenizer._check_fitted()
    params = {"n_levels": tokenizer.n_levels, "codebook_sizes": list(tokenizer.codebook_sizes),
              "seed": tokenizer.seed}
    tensors = {}
    if isinstance(tokenizer, RQVAETokenizer):
        model = tokenizer.model
        params.update({
            "input_dim": int(model.encoder[0].in_features), "hidden_dims": list(tokenizer.hidden_dims),
            "latent_dim": tokenizer.latent_dim, "beta": tokenizer.beta,
            "effective_sizes": [int(cb.shape[0]) for cb in model.quantizer.codebooks],
        })
        tensors.update({f"rqvae.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    elif isinstance(tokenizer, ResidualKMeansTokenizer):
        for level, cents in enumerate(tokenizer.centroids):
            tensors[f"rkmeans.centroids.{level}"] = torch.from_numpy(np.ascontiguousarray(cents, dtype=np.float32))
    elif isinstance(tokenizer, HierarchicalKMeansTokenizer):
        for level, nodes in enumerate(tokenizer.nodes):
            keys = sorted(nodes)  # prefix tuples of length `level`
            prefixes = np.asarray(keys, dtype=np.int64).reshape(len(keys), level)  # [G, level]
            counts = np.asarray([nodes[k].shape[0] for k in keys], dtype=np.int64)  # [G]
            cents = np.concatenate([nodes[k] for k in keys]).astype(np.float32)  # [sum counts, D]
            tensors[f"hkmeans.{level}.prefixes"] = torch.from_numpy(prefixes)
            tensors[f"hkmeans.{level}.counts"] = torch.from_numpy(counts)
            tensors[f"hkmeans.{level}.centroids"] = torch.from_numpy(np.ascontiguousarray(cents))
    else:
        raise TypeError(f"cannot store a {type(tokenizer).__name__}: only rqvae, rkmeans and hkmeans tokenizers")
    params["method"] = tokenizer.name
    return tensors, params


def tokenizer_from_tensors(tensors, params):
    """The fitted tokenizer (on CPU, eval mode) described by :func:`tokenizer_tensors`'s output."""
    method = params["method"]
    common = dict(n_levels=params["n_levels"], codebook_sizes=params["codebook_sizes"], seed=params["seed"],
                  device="cpu", show_progress=False)
    if method == "rqvae":
        tok = RQVAETokenizer(hidden_dims=params["hidden_dims"], latent_dim=params["latent_dim"], beta=params["beta"],
                             **common)
        tok.model = RQVAE(params["input_dim"], params["hidden_dims"], params["latent_dim"], params["effective_sizes"],
                          params["beta"])
        tok.model.load_state_dict({k[len("rqvae."):]: v for k, v in tensors.items() if k.startswith("rqvae.")})
        tok.model.eval()
    elif method == "rkmeans":
        tok = ResidualKMeansTokenizer(**common)
        tok.centroids = [tensors[f"rkmeans.centroids.{level}"].numpy() for level in range(params["n_levels"])]
    elif method == "hkmeans":
        tok = HierarchicalKMeansTokenizer(**common)
        tok.nodes = []
        for level in range(params["n_levels"]):
            prefixes = tensors[f"hkmeans.{level}.prefixes"].numpy()
            counts = tensors[f"hkmeans.{level}.counts"].numpy()
            cents = np.split(tensors[f"hkmeans.{level}.centroids"].numpy(), np.cumsum(counts)[:-1])
            tok.nodes.append({tuple(int(c) for c in p): cent for p, cent in zip(prefixes, cents)})
    else:
        raise ValueError(f"unknown tokenizer method {method!r} in a stored tokenizer")
    tok.fitted = True
    return tok


# ============================================================================= the fitted tokenizer
class FittedTokenizer:
    r"""A fitted tokenizer plus the final codes of the items it was fitted for.

    Args:
        tokenizer: a fitted rqvae / rkmeans / hkmeans tokenizer.
        codes (`(N, L')` int64): final (collision-handled) codes of the fitted items, rows in item order.
        codebook_sizes (`list[int]` of length `L'`): final sizes (extra level included).
        collision (`str`): ``extra_level`` | ``sinkhorn`` | ``none``.
    """

    def __init__(self, tokenizer, codes, codebook_sizes, collision):
        self.tokenizer = tokenizer
        self.codes = np.asarray(codes, dtype=np.int64)  # [N, L']
        self.codebook_sizes = [int(k) for k in codebook_sizes]
        self.collision = str(collision)
        self.n_levels = tokenizer.n_levels  # L: levels the tokenizer itself produces
        expected = self.n_levels + (1 if self.collision == "extra_level" else 0)
        if self.codes.ndim != 2 or self.codes.shape[1] != expected or len(self.codebook_sizes) != expected:
            raise ValueError(f"stored codes {self.codes.shape} / sizes {self.codebook_sizes} do not fit a "
                             f"{self.n_levels}-level tokenizer with collision={self.collision!r}")

    @property
    def method(self):
        return self.tokenizer.name

    # ------------------------------------------------------------------ encoding
    def encode_raw(self, emb):
        """Codes before collision handling: `(M, D)` embeddings -> `(M, L)` int64."""
        x = validate_embeddings(emb)
        if x.shape[1] != self.input_dim:
            raise ValueError(f"embeddings have dimension {x.shape[1]} but the tokenizer was fitted on "
                             f"{self.input_dim}-dimensional ones: encode the texts with the same text encoder")
        return self.tokenizer.encode(x)

    @property
    def input_dim(self):
        tok = self.tokenizer
        if isinstance(tok, RQVAETokenizer):
            return int(tok.model.encoder[0].in_features)
        if isinstance(tok, ResidualKMeansTokenizer):
            return int(tok.centroids[0].shape[1])
        return int(tok.nodes[0][()].shape[1])

    def assign(self, emb, existing=None):
        r"""Unique codes for new items, by the fit's collision rule, leaving ``existing`` untouched.

        Args:
            emb (`(M, D)`): embeddings of the new items (same text encoder as the fit).
            existing (`(N, L')` int64, *optional*): codes already taken (rows with a negative entry are ignored);
                defaults to the stored codes. Pass a model's code table to respect items added since.
        Returns:
            ``(codes (M, L') int64, codebook_sizes list)``: the sizes grow where a new code exceeds them (the
            extra level); a model whose vocabulary is fixed must check them.
        """
        existing = self.codes if existing is None else np.asarray(existing, dtype=np.int64)
        existing = existing[(existing >= 0).all(axis=1)]  # [N', L']
        raw = self.encode_raw(emb)  # [M, L]
        sizes = list(self.codebook_sizes)
        if self.collision == "none":
            return raw, sizes
        if self.collision == "extra_level":
            return self._assign_extra_level(raw, existing, sizes)
        if self.collision == "sinkhorn":
            return self._assign_sinkhorn(validate_embeddings(emb), raw, existing), sizes
        raise ValueError(f"unknown collision rule {self.collision!r}")

    @staticmethod
    def _assign_extra_level(raw, existing, sizes):
        next_extra = {}  # first-L tuple -> next free extra code
        for row in existing.tolist():
            key = tuple(row[:-1])
            next_extra[key] = max(next_extra.get(key, 0), row[-1] + 1)
        extra = np.empty(len(raw), dtype=np.int64)
        for i, row in enumerate(raw.tolist()):
            key = tuple(row)
            extra[i] = next_extra.get(key, 0)
            next_extra[key] = extra[i] + 1
        codes = np.concatenate([raw, extra[:, None]], axis=1)  # [M, L+1]
        if len(codes):
            sizes[-1] = max(sizes[-1], int(extra.max()) + 1)
        return codes, sizes

    def _assign_sinkhorn(self, x, raw, existing):
        codes = raw.copy()  # [M, L]
        taken = {}  # prefix -> set of used last codes
        for row in existing.tolist():
            taken.setdefault(tuple(row[:-1]), set()).add(row[-1])
        k_last = self.codebook_sizes[-1]
        prefix_inv = tuple_groups(raw[:, :-1])[0] if raw.shape[1] > 1 else np.zeros(len(raw), dtype=np.int64)
        for group in np.unique(prefix_inv):
            rows = np.flatnonzero(prefix_inv == group)  # new items of one prefix
            prefix = tuple(int(c) for c in raw[rows[0], :-1])
            used = set(taken.get(prefix, set()))
            movers = []
            for r in rows:  # in order: the first new item on a free code keeps it
                if int(raw[r, -1]) in used:
                    movers.append(r)
                else:
                    used.add(int(raw[r, -1]))
            if movers:
                free = np.setdiff1d(np.arange(k_last), np.fromiter(used, dtype=np.int64, count=len(used)))
                if len(free) < len(movers):
                    raise ValueError(f"sinkhorn: prefix {prefix} has {len(free)} free last-level codes left for "
                                     f"{len(movers)} new items; the tokenizer's code space is full there")
                dist = _finite_costs(self.tokenizer.last_level_distances(x[movers]))[:, free]  # [a, b]
                log_plan = sinkhorn_plan(dist)
                score = log_plan if np.isfinite(log_plan).all() else -dist
                codes[movers, -1] = free[greedy_match(score)]
                used.update(int(c) for c in codes[movers, -1])
            taken[prefix] = used
        return codes

    # ------------------------------------------------------------------ storage
    def save(self, path_stem, key, extra=None):
        """Write ``<stem>.safetensors`` and ``<stem>.json`` (atomic, with content-hash sidecars); returns the paths."""
        from safetensors.torch import save as st_save

        from recbole_genrec.preprocess import cache

        tensors, params = tokenizer_tensors(self.tokenizer)
        tensors["codes"] = torch.from_numpy(np.ascontiguousarray(self.codes))
        blob = st_save(tensors)
        meta = {"format": FORMAT_VERSION, "params": params, "codebook_sizes": self.codebook_sizes,
                "collision": self.collision, "n_items": int(len(self.codes)), "key": key, **(extra or {})}
        weights, meta_path = path_stem + WEIGHTS_SUFFIX, path_stem + META_SUFFIX
        cache.write_artifact(weights, lambda f: f.write(blob), key)
        cache.save_json(meta_path, meta, key)
        return weights, meta_path

    @classmethod
    def load(cls, path_stem, key=None):
        """Read a stored tokenizer; checks both files against their sidecars (and ``key`` when given)."""
        from safetensors.torch import load as st_load

        from recbole_genrec.preprocess import cache

        weights, meta_path = path_stem + WEIGHTS_SUFFIX, path_stem + META_SUFFIX
        for path in (weights, meta_path):
            sidecar = cache.read_meta(path)
            status = cache.check_artifact(path, key if key is not None else (sidecar or {}).get("key"))
            if status != "hit":
                raise FileNotFoundError(
                    f"stored tokenizer {path} is {status}; rebuild it by running the preprocessing hook again "
                    f"(python -m recbole_genrec.preprocess with the same dataset and sid_* settings)")
        with open(weights, "rb") as f:
            tensors = st_load(f.read())
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_path} has format {meta.get('format')}, this code reads {FORMAT_VERSION}")
        tok = tokenizer_from_tensors(tensors, meta["params"])
        return cls(tok, tensors["codes"].numpy(), meta["codebook_sizes"], meta["collision"])


def tokenizer_stem(store, sid_key):
    """``<store>/tokenizer-<sid16>`` (add ``.safetensors`` / ``.json``)."""
    import os

    from recbole_genrec.preprocess.layout import short

    return os.path.join(store, f"tokenizer-{short(sid_key)}")


def load_for_config(config):
    """The tokenizer the hook fitted for ``config`` (a config the hook has prepared, e.g. a model's)."""
    from recbole_genrec.preprocess import cache

    hashes = config["genrec_feature_hashes"] or {}
    if not hashes.get("sid"):
        raise ValueError("this config has no semantic IDs prepared by the hook (genrec_features lacks 'sid'), so "
                         "there is no stored tokenizer to encode new items with")
    store = (getattr(cache, "store_dir", None) or cache.overlay_dir)(config)  # the dataset's store (overlay_dir in older versions)
    return FittedTokenizer.load(tokenizer_stem(store, hashes["sid"]), hashes["sid"])


def embed_texts(config, texts):
    """Embed new item texts exactly as the hook embedded the catalogue: `(M, D)` float32."""
    from recbole_genrec.preprocess import text_encoder

    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("no texts given")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise ValueError(f"texts {empty[:5]} are empty; give every new item a text (title, category, ...)")
    device = str(config["device"] or "cpu")
    return text_encoder.encode_texts(
        texts, encoder=config["text_encoder"], pooling=config["text_pooling"],
        max_length=int(config["text_max_length"]), batch_size=int(config["text_batch_size"]),
        device="cuda" if device.startswith("cuda") else "cpu", show_progress=False,
    ).astype(np.float32)
