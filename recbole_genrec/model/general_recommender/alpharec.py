r"""AlphaRec: collaborative filtering on top of frozen language representations.

Reference
---------
Leheng Sheng, An Zhang, Yi Zhang, Yuxin Chen, Xiang Wang, Tat-Seng Chua.
*Language Representations Can be What Recommenders Need: Findings and Potentials.*
ICLR 2025. Official code: https://github.com/LehengTHU/AlphaRec

Model
-----
1. Every item :math:`i` has a frozen language-model embedding :math:`e_i` of its text
   (``item_embeddings(dataset)``, produced by the preprocessing hook with ``genrec_features:
   [text_emb]``). Every user :math:`u` starts from the mean of the embeddings of the items
   in *their training interactions*: :math:`e_u = \frac{1}{|N_u|}\sum_{i \in N_u} e_i`
   (``dataset.inter_matrix`` of the training dataset RecBole passes to the constructor;
   validation and test interactions never enter it).
2. One shared mapping sends both into the collaborative space: ``alpharec_mapping: mlp``
   (official: ``Linear(D, hidden) -> LeakyReLU -> Linear(hidden, embedding_size)``) or
   ``alpharec_mapping: linear`` (one ``Linear(D, embedding_size, bias=False)``; the paper's
   "linear mapping" finding).
3. LightGCN propagation over the symmetrically normalised training bipartite graph
   :math:`D^{-1/2} A D^{-1/2}`; the output is the mean of layers ``0..n_layers``.
4. InfoNCE with cosine similarity and temperature ``tau``: for a positive pair ``(u, i)``
   and ``neg_num`` sampled negatives :math:`j`,
   :math:`-\log \frac{\exp(\cos(u,i)/\tau)}{\exp(\cos(u,i)/\tau) + \sum_j \exp(\cos(u,j)/\tau)}`.
   ``neg_num: 0`` uses the other positives of the batch as negatives (in-batch softmax).
5. ``predict`` and ``full_sort_predict`` return cosine similarities, in ``[-1, 1]``.

Only the mapping has trainable parameters. The language-model tables, user initial vectors
and graph are non-persistent buffers, so ``state_dict()`` holds the mapping only and can be
loaded into an AlphaRec built on *another* dataset encoded by the same text encoder: that
is zero-shot transfer (:mod:`recbole_genrec.alpharec.zeroshot`). User intention queries are in
:mod:`recbole_genrec.alpharec.intention`.

Negatives
---------
By default (``train_neg_sample_args: ~`` in ``properties/model/AlphaRec.yaml``) RecBole
yields positive interactions only and the model draws ``neg_num`` uniform negatives per
positive itself, re-drawing those that hit one of the user's training items
(``neg_exclude_pos``). This keeps ``train_batch_size`` = positives per batch as in the
official code; RecBole's pairwise sampler instead repeats every positive ``sample_num``
times, divides the batch by it and samples with a Python loop. That sampler still works:
set ``train_neg_sample_args: {distribution: uniform, sample_num: K}`` (and scale
``train_batch_size`` by ``K``) and the model regroups the ``K`` copies of each positive.

Differences from the official code
----------------------------------
Checked against LehengTHU/AlphaRec (``models/General/AlphaRec.py``, ``base/abstract_data.py``,
``base/abstract_RS.py``, ``base/utils.py``, ``parse.py`` and the README's run commands).

Same as the official code (defaults in ``properties/model/AlphaRec.yaml``):

- Positives: ``train_sampling: user_uniform`` (:mod:`recbole_genrec.data.sampling`): an epoch
  has one sample per training interaction, sample ``k`` is user ``k mod n_users`` and one of
  their training items drawn uniformly (``TrainDataset.__getitem__``). ``train_sampling:
  interaction`` is RecBole's pass over the interactions (this plugin's earlier default).
- Negatives: the official loader draws 256 uniform items *excluding the user's training items*
  (``randint_choice(n_items, size=256, exclusion=train_user_list[user])``); ours re-draws hits
  on training items (up to 10 rounds; the leftovers, rare, are kept). Verified, and it matches.
- MLP width: ``alpharec_hidden_size: auto`` applies the official rule to the encoder's
  dimension ``D``: ``int(D / 2)`` for text-embedding-3-large (``multiplier_dict['v3'] = 1/2``,
  1536) and ``int(9/32 * D)`` for every other encoder (the official fallback, 108 for MiniLM's
  384). The official table also lists 8 for its ``bert``/``roberta`` and 2 for its ``v2``
  embedding files; we do not map those names to checkpoints, so they get 9/32 unless the width
  is set. An integer sets the width directly (this plugin's earlier default was 1024). Note: the
  official table is commented "to keep the same parameter size" (about 4.7M first-layer weights
  for every listed encoder) and its 9/32 fallback "for dimension = 4096"; applied to MiniLM's 384
  dimensions it gives a 48k-parameter MLP, and on ml-100k it cost 7.6% Recall@20 against width
  1024 (``benchmarks/results/alpharec-defaults-ml-100k.md``).
- Schedule: validation every 5 epochs (``--verbose 5`` = ``eval_step: 5``), patience 20
  validations (``--patience 20`` in the README's commands = ``stopping_step: 20``, 100 epochs).
- Adam lr 5e-4, no weight decay, batch 4096 positives, tau 0.15, 2 layers, cosine in training
  and scoring (``--train_norm --pred_norm``).

Different:

- Checkpoint selection: we select (and early-stop) on the *validation* split through
  RecBole's trainer; the official ``evaluation()`` tracks its best epoch and patience on the
  *test* split (``if name == "test"``).
- Text encoder: all-MiniLM-L6-v2 (D = 384), offline; the paper's main results use OpenAI
  ``text-embedding-3-large`` (D = 3072).
- Data and splits: RecBole atomic files and RecBole's splits/evaluator (full ranking with the
  user's training items masked). The official code reads pre-split files; RecBole reads a
  paper's split files with ``benchmark_filename: [train, valid, test]`` (README).
- Negative sampling is vectorised inside the model (see above) rather than in a PyTorch
  ``Dataset``; ``neg_exclude_pos: False`` turns the exclusion off.
- RecBole keeps the last partial training batch; the official loader drops it.
- The linear-mapping variant has no bias (a pure linear map ``W e``), as the official ``homo``.
"""

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_genrec.preprocess.features import item_embeddings


def official_hidden_size(encoder, dim):
    """The official MLP width for an encoder of dimension ``dim``: ``int(dim / 2)`` for
    text-embedding-3-large, ``int(9/32 * dim)`` otherwise (``multiplier_dict`` of the official
    ``AlphaRec.__init__``; its fallback is 9/32)."""
    multiplier = 1 / 2 if "text-embedding-3-large" in str(encoder).lower() else 9 / 32
    return max(int(multiplier * dim), 1)


def build_user_init(inter_csr, item_lm):
    """``[n_users, D]``: row ``u`` = mean of ``item_lm`` over the items of ``inter_csr[u]``.

    ``inter_csr`` is the (training) user-item matrix; users without items get zeros.
    Repeated interactions count once (the matrix is binarised).
    """
    inter = sp.csr_matrix(inter_csr, dtype=np.float32, copy=True)
    inter.sum_duplicates()
    inter.data[:] = 1.0
    counts = np.asarray(inter.sum(axis=1)).ravel()
    inv = np.zeros_like(counts)
    inv[counts > 0] = 1.0 / counts[counts > 0]
    norm = sp.diags(inv.astype(np.float32)) @ inter
    return torch.from_numpy(np.asarray(norm @ item_lm.detach().cpu().numpy(), dtype=np.float32))


def build_norm_adj(inter_csr, n_users, n_items):
    """Sparse ``D^{-1/2} A D^{-1/2}`` of the bipartite graph (users first, then items)."""
    inter = sp.coo_matrix(inter_csr, dtype=np.float32)
    inter = sp.coo_matrix((np.ones_like(inter.data), (inter.row, inter.col)), shape=(n_users, n_items))
    inter = inter.tocsr()
    inter.data[:] = 1.0  # duplicates were summed by tocsr(); binarise
    inter = inter.tocoo()
    n = n_users + n_items
    rows = np.concatenate([inter.row, inter.col + n_users])
    cols = np.concatenate([inter.col + n_users, inter.row])
    adj = sp.coo_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    deg = np.asarray(adj.sum(axis=1)).ravel() + 1e-7
    d_inv_sqrt = np.power(deg, -0.5).astype(np.float32)
    values = d_inv_sqrt[rows] * d_inv_sqrt[cols]
    index = torch.from_numpy(np.vstack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(index, torch.from_numpy(values), (n, n), check_invariants=False).coalesce()


class AlphaRec(GeneralRecommender):
    r"""AlphaRec (Sheng et al., ICLR 2025). See the module docstring for details."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.config = config  # read by recbole_genrec.alpharec (intention, zeroshot) (text encoder, hyperparameters)
        self.embedding_size = int(config["embedding_size"])
        self.mapping_type = str(config["alpharec_mapping"]).lower()
        self.n_layers = int(config["n_layers"])
        self.tau = float(config["tau"])
        self.neg_num = int(config["neg_num"])
        self.neg_exclude_pos = bool(config["neg_exclude_pos"])
        sampler = config["train_neg_sample_args"] or {}  # ~ (AlphaRec.yaml) = RecBole's sampler off
        self.recbole_neg_num = sampler.get("sample_num") if sampler.get("distribution") in ("uniform", "popularity") else None
        self.recbole_neg_num = max(int(self.recbole_neg_num), 1) if self.recbole_neg_num not in (None, "none") else 1

        item_lm = item_embeddings(dataset).float()
        if item_lm.shape[0] != self.n_items:
            raise ValueError(f"item_embeddings has {item_lm.shape[0]} rows, dataset has {self.n_items} items")
        self.lm_dim = item_lm.shape[1]
        self.hidden_size = self._hidden_size(config)

        inter_csr = dataset.inter_matrix(form="csr").astype(np.float32)
        self.n_train_inter = int(inter_csr.nnz)
        user_lm = build_user_init(inter_csr, item_lm)
        # Non-persistent: state_dict() keeps only the mapping (transferable across datasets).
        self.register_buffer("item_lm", item_lm, persistent=False)
        self.register_buffer("user_lm", user_lm, persistent=False)
        self.register_buffer("norm_adj", build_norm_adj(inter_csr, self.n_users, self.n_items), persistent=False)
        # Sorted keys user * n_items + item of training pairs, to re-draw false negatives.
        coo = inter_csr.tocoo()
        keys = np.unique(coo.row.astype(np.int64) * self.n_items + coo.col.astype(np.int64))
        self.register_buffer("train_keys", torch.from_numpy(keys), persistent=False)
        if self.n_users * self.n_items <= 2e7:  # small graphs: dense boolean lookup is faster
            dense = torch.zeros(self.n_users * self.n_items, dtype=torch.bool)
            dense[torch.from_numpy(keys)] = True
            self.register_buffer("train_mask", dense.view(self.n_users, self.n_items), persistent=False)
        else:
            self.train_mask = None

        if self.mapping_type == "mlp":
            self.mapping = nn.Sequential(
                nn.Linear(self.lm_dim, self.hidden_size),
                nn.LeakyReLU(),
                nn.Linear(self.hidden_size, self.embedding_size),
            )
        elif self.mapping_type == "linear":
            self.mapping = nn.Linear(self.lm_dim, self.embedding_size, bias=False)
        else:
            raise ValueError(f"alpharec_mapping must be 'mlp' or 'linear', got {self.mapping_type!r}")

        self.restore_user_e = None
        self.restore_item_e = None
        self.other_parameter_name = ["restore_user_e", "restore_item_e"]
        self.to(self.device)

    def _hidden_size(self, config):
        width = config["alpharec_hidden_size"]
        if isinstance(width, str) and width.lower() == "auto":
            return official_hidden_size(config["text_encoder"], self.lm_dim)
        try:
            width = int(width)
        except (TypeError, ValueError):
            width = 0
        if width < 1:
            raise ValueError(f"alpharec_hidden_size must be a positive integer or 'auto' (the official width "
                             f"rule), got {config['alpharec_hidden_size']!r}.")
        return width

    # ------------------------------------------------------------------ representations
    def map_lm(self, lm):
        """Map language-model vectors ``[*, D]`` into the collaborative space."""
        return self.mapping(lm)

    def forward(self):
        """Propagated ``(user_e [n_users, d], item_e [n_items, d])`` (not normalised)."""
        ego = torch.cat([self.map_lm(self.user_lm), self.map_lm(self.item_lm)], dim=0)
        layers = [ego]
        x = ego
        for _ in range(self.n_layers):
            x = torch.sparse.mm(self.norm_adj, x)
            layers.append(x)
        out = torch.stack(layers, dim=1).mean(dim=1)
        return torch.split(out, [self.n_users, self.n_items])

    def _cached(self):
        if self.restore_user_e is None or self.restore_item_e is None:
            user_e, item_e = self.forward()
            self.restore_user_e = F.normalize(user_e, dim=-1)
            self.restore_item_e = F.normalize(item_e, dim=-1)
        return self.restore_user_e, self.restore_item_e

    def train(self, mode=True):
        # Any switch of mode drops the evaluation cache (it is rebuilt from current weights).
        self.restore_user_e, self.restore_item_e = None, None
        return super().train(mode)

    # ------------------------------------------------------------------ training
    def _is_train_pair(self, users, items):
        if self.train_mask is not None:
            return self.train_mask[users, items]
        keys = users * self.n_items + items
        pos = torch.searchsorted(self.train_keys, keys).clamp_(max=self.train_keys.numel() - 1)
        return self.train_keys[pos] == keys

    def sample_negatives(self, users, num):
        """``[B, num]`` uniform item ids in ``1..n_items-1``; those in the user's training
        items are re-drawn (up to 10 rounds, then kept) when ``neg_exclude_pos``."""
        neg = torch.randint(1, self.n_items, (users.shape[0], num), device=users.device)
        if not self.neg_exclude_pos or self.train_keys.numel() == 0:
            return neg
        rows = users.unsqueeze(1).expand_as(neg)
        idx = self._is_train_pair(rows, neg).nonzero(as_tuple=True)
        for _ in range(10):
            if idx[0].numel() == 0:
                break
            redraw = torch.randint(1, self.n_items, (idx[0].numel(),), device=neg.device)
            neg[idx] = redraw
            still = self._is_train_pair(rows[idx], redraw)
            idx = (idx[0][still], idx[1][still])
        return neg

    def calculate_loss(self, interaction):
        self.restore_user_e, self.restore_item_e = None, None
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        user_all, item_all = self.forward()

        if self.NEG_ITEM_ID in interaction.interaction:
            # RecBole's pairwise sampler: rows are K stacked copies of the B positives.
            neg_item = interaction[self.NEG_ITEM_ID]
            k = self.recbole_neg_num
            if k > 1 and user.shape[0] % k == 0:
                b = user.shape[0] // k
                user, pos_item = user[:b], pos_item[:b]
                neg_item = neg_item.view(k, b).t()
            else:
                neg_item = neg_item.unsqueeze(1)
        elif self.neg_num > 0:
            neg_item = self.sample_negatives(user, self.neg_num)
        else:
            neg_item = None

        # Normalise the tables first (cheap), then gather: cosine = dot of unit vectors.
        item_n = F.normalize(item_all, dim=-1)
        u = F.normalize(user_all[user], dim=-1) / self.tau  # temperature folded into u
        pos_logit = (u * item_n[pos_item]).sum(-1, keepdim=True)  # [B, 1]
        if neg_item is None:  # in-batch softmax
            logits = u @ item_n[pos_item].t()
            labels = torch.arange(u.shape[0], device=u.device)
            return F.cross_entropy(logits, labels)
        if self.n_items <= neg_item.shape[1] * self.embedding_size:
            # Score all items once and pick the negatives: cheaper than gathering [B, K, d].
            neg_logit = torch.gather(u @ item_n.t(), 1, neg_item)  # [B, K]
        else:
            neg_logit = torch.einsum("bd,bkd->bk", u, item_n[neg_item])
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return (torch.logsumexp(logits, dim=1) - pos_logit.squeeze(1)).mean()

    # ------------------------------------------------------------------ scoring
    def predict(self, interaction):
        user_e, item_e = self._cached()
        u = user_e[interaction[self.USER_ID]]
        i = item_e[interaction[self.ITEM_ID]]
        return (u * i).sum(-1)

    def full_sort_predict(self, interaction):
        user_e, item_e = self._cached()
        return (user_e[interaction[self.USER_ID]] @ item_e.t()).view(-1)

    def full_sort_factors(self):
        """``(user_e [n_users, d], item_e [n_items, d])`` with ``full_sort_predict`` = ``user_e[u] @ item_e.T``
        (read by :mod:`recbole_genrec.trainer.fast_eval`)."""
        return self._cached()

    @torch.no_grad()
    def add_items(self, texts=None, embeddings=None):
        r"""Append new items scored through the text mapping, without retraining; returns their ids `(M,)`.

        ``texts`` are embedded with the configured text encoder (as the hook embedded the catalogue), or pass their
        ``embeddings`` `(M, D)`. A new item has no interaction, so it is an isolated node of the graph: its
        propagated embedding is its mapped language vector divided by ``n_layers + 1``, i.e. after the cosine
        normalisation its score is ``cos(user, mapping(e_i))``. Nothing else changes: existing users and items
        keep their scores exactly.
        """
        from recbole_genrec.tokenizers.artifact import embed_texts

        if (texts is None) == (embeddings is None):
            raise ValueError("pass exactly one of texts= or embeddings=")
        lm = embed_texts(self.config, texts) if texts is not None else embeddings
        lm = torch.as_tensor(np.asarray(lm.cpu() if torch.is_tensor(lm) else lm, dtype=np.float32))
        if lm.dim() != 2 or lm.shape[1] != self.lm_dim:
            raise ValueError(f"embeddings must have shape [M, {self.lm_dim}] (the text encoder's width), "
                             f"got {tuple(lm.shape)}")
        old_n, new_n = self.n_items, self.n_items + lm.shape[0]
        self.item_lm = torch.cat([self.item_lm, lm.to(self.item_lm.device)])
        adj = self.norm_adj.coalesce()  # users first, then items: appended items shift no index
        n = self.n_users + new_n
        self.norm_adj = torch.sparse_coo_tensor(adj.indices(), adj.values(), (n, n), check_invariants=False).coalesce()
        users, items = torch.div(self.train_keys, old_n, rounding_mode="floor"), torch.remainder(self.train_keys, old_n)
        self.train_keys = users * new_n + items
        if self.train_mask is not None:
            pad = self.train_mask.new_zeros(self.n_users, new_n - old_n)
            self.train_mask = torch.cat([self.train_mask, pad], dim=1)
        self.n_items = new_n
        self.restore_user_e, self.restore_item_e = None, None
        return torch.arange(old_n, new_n)

    @torch.no_grad()
    def user_item_representations(self):
        """Normalised propagated ``(user_e, item_e)`` from the current weights."""
        user_e, item_e = self.forward()
        return F.normalize(user_e, dim=-1), F.normalize(item_e, dim=-1)
