# coding: utf-8
"""RPG: long, unordered semantic IDs whose codes are all predicted at once.

Reference:
    Yupeng Hou, Jiacheng Li, Ashley Shin, Jinsung Jeon, Abhishek Santhanam, Wei Shao, Kaveh Hassani, Ning Yao,
    Julian McAuley. "Generating Long Semantic IDs in Parallel for Recommendation." KDD 2025.
    Official code: facebookresearch/RPG_KDD2025.

Every item is ``K`` codes of ``C`` values (faiss OPQ over its text embedding, ``sid_method: opq``: 32 x 256 on
Beauty). An item enters the model as one token, the mean of its ``K`` code embeddings; a small GPT-2-style causal
decoder reads the history; at every position ``K`` residual SiLU heads turn the hidden state into one query per
code, and code ``k``'s logits are the cosine similarities of its query with code ``k``'s embeddings (the same
table as the input), divided by a temperature. The loss is the mean of the ``K`` cross-entropies of the next
item's codes, at every position of a training sequence (``seq_train_rows: sequences``: one row per user). An
item's score is the mean of its codes' log-probabilities, so every item is scored exactly from the ``K x C``
log-probabilities (``rpg_decoding: exact``); ``rpg_decoding: graph`` is the paper's graph-constrained decoding
(beams walk a k-nearest-neighbour graph of the items built from the code embeddings).

Deviations from the official code (the defaults are its Beauty settings otherwise):

* data: RecBole's loading, filtering and leave-one-out split. A training sequence longer than
  ``MAX_ITEM_LIST_LENGTH + 1`` items is cut from its end into windows that do not overlap, each trained at every
  position (official: the first ``MAX_ITEM_LIST_LENGTH + 1`` items at every position, then one sliding window per
  later item, trained at its last position);
* text: the plugin's text encoder (all-MiniLM-L6-v2, 384-d) on the dataset's text fields, PCA-whitened to 128
  dimensions (official: OpenAI text-embedding-3-large, 3072-d, whitened to 512);
* the PCA and OPQ are fitted on every item RecBole keeps, except the items the cold-start protocol holds out
  (official: OPQ on the items of the training split only, PCA on all items);
* evaluation ranks every item exactly at validation and test by default (official: exact at validation,
  graph-constrained decoding at test); ``rpg_decoding: graph`` uses the graph for both, and its starting beams are
  drawn from a generator seeded with ``seed`` (official: torch's global random state);
* the decoder is written with torch modules (GPT-2's pre-norm blocks, learned positions, tanh GELU, GPT-2's
  initialisation) instead of transformers' ``GPT2Model``; the item embedding table holds only the ``K x C`` codes
  (official: also unused padding and end-of-sequence tokens);
* an item without codes (a cold-start item before ``add_items``) enters a history as a zero vector and is never
  recommended; ``add_items`` gives new items codes from the stored tokenizer with no retraining.
"""

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_genrec.data.sequences import seq_train_rows_mode
from recbole_genrec.model.sequential_recommender.tiger import AddedItems
from recbole_genrec.preprocess.features import codebook_sizes, item_codes

_EVAL_GROUP = 64  # users per decoder call at inference (groups of similar history length)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, attn_pdrop: float, resid_pdrop: float):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"RPG: n_embd={d_model} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_pdrop = attn_pdrop
        self.resid_drop = nn.Dropout(resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_head, width // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_pdrop if self.training else 0.0,
                                           is_causal=True)  # [B, H, T, d_head]
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(batch, length, width)))


class DecoderBlock(nn.Module):
    """GPT-2 block: pre-norm causal self-attention and feed-forward, each added to the residual stream."""

    def __init__(self, d_model, n_head, n_inner, attn_pdrop, resid_pdrop, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=eps)
        self.attn = CausalSelfAttention(d_model, n_head, attn_pdrop, resid_pdrop)
        self.ln_2 = nn.LayerNorm(d_model, eps=eps)
        self.fc = nn.Linear(d_model, n_inner)
        self.proj = nn.Linear(n_inner, d_model)
        self.drop = nn.Dropout(resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.drop(self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh")))  # GPT-2's gelu_new


class RPG(SequentialRecommender):
    r"""RPG over the hook's semantic IDs (``genrec_features: [text_emb, sid]``, ``sid_method: opq``).

    ``calculate_loss`` trains every position when ``seq_train_rows: sequences`` (one row per user sequence), else
    only the last one (RecBole's prefix rows: the same targets, one pass per prefix). ``full_sort_predict`` scores
    every item, `(B, n_items)`; ``predict`` scores ``ITEM_ID``; both ``-inf`` for items without codes.
    """

    input_type = InputType.POINTWISE  # (history, next item) rows, no negatives

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.config = config  # read by add_items (text encoder, stored tokenizer)
        codes = item_codes(dataset)  # [n_items, K], -1 = no code (padding row, held-out items)
        sizes = codebook_sizes(dataset)
        if len(set(sizes)) != 1:
            raise ValueError(f"RPG predicts every code with one table per code of the same size, but the semantic "
                             f"IDs have codebook sizes {sizes}; use sid_method: opq with sid_collision: none")
        self.n_codes, self.codebook_size = codes.size(1), int(sizes[0])
        self.register_buffer("codes", codes)
        self.register_buffer("code_offsets", torch.arange(self.n_codes) * self.codebook_size)  # [K]

        d_model = int(config["n_embd"])
        self.d_model = d_model
        self.code_embedding = nn.Embedding(self.n_codes * self.codebook_size, d_model)  # [K * C, d], input + output
        self.position_embedding = nn.Embedding(self.max_seq_length, d_model)
        self.embed_drop = nn.Dropout(float(config["embd_pdrop"]))
        self.blocks = nn.ModuleList(
            DecoderBlock(d_model, int(config["n_head"]), int(config["n_inner"]), float(config["attn_pdrop"]),
                         float(config["resid_pdrop"]), float(config["layer_norm_epsilon"]))
            for _ in range(int(config["n_layer"]))
        )
        self.ln_f = nn.LayerNorm(d_model, eps=float(config["layer_norm_epsilon"]))
        # K residual SiLU heads h + silu(W_k h + b_k), stacked so that one matrix product runs them all
        self.head_weight = nn.Parameter(torch.zeros(self.n_codes, d_model, d_model))  # zero: identity at start
        bound = 1.0 / math.sqrt(d_model)  # nn.Linear's bias initialisation
        self.head_bias = nn.Parameter(torch.empty(self.n_codes, d_model).uniform_(-bound, bound))
        self.temperature = float(config["rpg_temperature"])
        self.all_positions = seq_train_rows_mode(config) == "sequences"
        self._init_weights(float(config["initializer_range"]), int(config["n_layer"]))

        self.decoding = str(config["rpg_decoding"])
        if self.decoding not in ("exact", "graph"):
            raise ValueError(f"rpg_decoding={self.decoding!r} must be exact or graph")
        self.num_beams = int(config["rpg_num_beams"])
        self.n_edges = int(config["rpg_n_edges"])
        self.propagation_steps = int(config["rpg_propagation_steps"])
        self.graph_chunk_size = int(config["rpg_graph_chunk_size"])
        self.seed = int(config["seed"])
        topk = config["topk"]
        max_topk = max(topk) if isinstance(topk, (list, tuple)) else int(topk)
        if self.decoding == "graph" and self.num_beams < max_topk:
            raise ValueError(f"RPG: rpg_num_beams={self.num_beams} must be >= max(topk)={max_topk} with "
                             f"rpg_decoding: graph (it returns rpg_num_beams items per user)")
        self._graph = None  # (adjacency [n_items, E], generator), built on the first graph decoding after training

    @staticmethod
    def resume_inert_keys(config):
        r"""Keys a resume state may differ in (:func:`recbole_genrec.trainer.resume.inert_keys`): the graph-decoding
        ones while every evaluation scores exactly."""
        graph = ("rpg_num_beams", "rpg_n_edges", "rpg_propagation_steps", "rpg_graph_chunk_size")
        return graph if str(config["rpg_decoding"]) == "exact" else ()

    def _init_weights(self, std: float, n_layer: int):
        """GPT-2's: normal(0, std) weights and embeddings, zero biases, unit layer norms, output projections of the
        residual branches scaled by 1 / sqrt(2 * n_layer)."""
        for module in [self.code_embedding, self.position_embedding, *self.blocks.modules()]:
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=std / math.sqrt(2 * n_layer))
            nn.init.normal_(block.proj.weight, mean=0.0, std=std / math.sqrt(2 * n_layer))

    # ---------------------------------------------------------------------------------------------- checkpoints
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "codes")
        if saved is not None and saved.shape != self.codes.shape:  # a checkpoint with items added by add_items
            self.codes = saved.detach().clone().to(self.codes.device)
            self.n_items = int(saved.size(0))
        self._graph = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True):
        if mode:
            self._graph = None  # the weights are about to change
        return super().train(mode)

    # -------------------------------------------------------------------------------------------------- pieces
    def flat_codes(self, item_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        r"""Rows of the `(K * C, d)` code table of items: `(..., K)` (``0`` for items without codes)."""
        codes = self.codes if item_ids is None else self.codes[item_ids]
        return codes.clamp(min=0) + self.code_offsets

    def has_codes(self, item_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        codes = self.codes if item_ids is None else self.codes[item_ids]
        return (codes >= 0).all(dim=-1)

    def item_inputs(self, item_seq: torch.Tensor) -> torch.Tensor:
        r"""`(B, T)` item ids -> `(B, T, d)`: the mean of each item's code embeddings (zero without codes)."""
        batch, length = item_seq.shape
        mean = F.embedding_bag(self.flat_codes(item_seq).view(batch * length, self.n_codes),
                               self.code_embedding.weight, mode="mean")  # [B * T, d]
        return (mean * self.has_codes(item_seq).view(-1, 1)).view(batch, length, self.d_model)

    def decode(self, item_seq: torch.Tensor) -> torch.Tensor:
        r"""Causal decoder over right-padded histories `(B, T)` -> hidden states `(B, T, d)` (padding positions come
        after every real one, so the causal mask alone keeps them out of the real positions' states)."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        x = self.embed_drop(self.item_inputs(item_seq) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def code_queries(self, hidden: torch.Tensor) -> torch.Tensor:
        r"""`(M, d)` hidden states -> `(M, K, d)` unit-norm queries, one per code (the residual SiLU heads)."""
        out = F.linear(hidden, self.head_weight.view(-1, self.d_model), self.head_bias.view(-1))  # [M, K * d]
        out = hidden.unsqueeze(1) + F.silu(out).view(-1, self.n_codes, self.d_model)  # [M, K, d]
        return F.normalize(out, dim=-1)

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        r"""`(M, d)` -> `(K, M, C)`: cosine of every code query with its code table, over the temperature."""
        table = F.normalize(self.code_embedding.weight, dim=-1).view(self.n_codes, self.codebook_size, self.d_model)
        queries = self.code_queries(hidden).transpose(0, 1)  # [K, M, d]
        return torch.bmm(queries, table.transpose(1, 2)) / self.temperature  # [K, M, C]

    def _trimmed(self, interaction):
        lengths = interaction[self.ITEM_SEQ_LEN]  # [B]
        return interaction[self.ITEM_SEQ][:, : int(lengths.max())], lengths  # right padding of the batch dropped

    # ------------------------------------------------------------------------------------------------ training
    def calculate_loss(self, interaction) -> torch.Tensor:
        item_seq, lengths = self._trimmed(interaction)  # [B, T], [B]
        hidden = self.decode(item_seq)  # [B, T, d]
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)  # [1, T]
        last = (lengths - 1).unsqueeze(1)  # [B, 1]
        if self.all_positions:  # position t predicts item t + 1; the last one the row's target
            targets = torch.cat([item_seq[:, 1:], torch.zeros_like(item_seq[:, :1])], dim=1)
            targets = targets.scatter(1, last, interaction[self.POS_ITEM_ID].unsqueeze(1))  # [B, T]
            mask = positions < lengths.unsqueeze(1)
        else:  # RecBole's prefix rows: the last position only
            targets = interaction[self.POS_ITEM_ID].unsqueeze(1).expand_as(item_seq)
            mask = positions == last
        target_items = targets[mask]  # [M]
        labels = self.codes[target_items].masked_fill(~self.has_codes(target_items).unsqueeze(1), -100)  # [M, K]
        logits = self.code_logits(hidden[mask])  # [K, M, C]
        # mean over codes of the per-code mean over positions = one mean (every code has the same positions)
        return F.cross_entropy(logits.reshape(-1, self.codebook_size), labels.t().reshape(-1), ignore_index=-100)

    # ----------------------------------------------------------------------------------------------- inference
    def last_hidden(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        r"""Hidden state at the last position of every history, `(B, d)`. Users run in groups of similar history
        length, each trimmed to its longest history (exact: the causal decoder never reads a later position), so
        an evaluation batch does not pay the longest history for every user."""
        out = item_seq.new_empty(item_seq.size(0), self.d_model, dtype=self.code_embedding.weight.dtype)
        for group in lengths.argsort().split(_EVAL_GROUP):
            group_lengths = lengths[group]
            hidden = self.decode(item_seq[group, : int(group_lengths.max())])  # [g, T_g, d]
            out[group] = hidden[torch.arange(len(group), device=hidden.device), group_lengths - 1]
        return out

    def code_log_probs(self, interaction) -> torch.Tensor:
        r"""Log-probabilities of every code value at the last position of every history: `(B, K, C)`."""
        last = self.last_hidden(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, d]
        return F.log_softmax(self.code_logits(last), dim=-1).transpose(0, 1)  # [B, K, C]

    def item_means(self, values: torch.Tensor, item_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        r"""Mean over codes of per-code values for many items at once.

        Args:
            values (`(B, K * C)`): a value for every code of every codebook (e.g. log-probabilities).
            item_ids (`(N,)`, *optional*): the items; all of them by default.
        Returns:
            `(B, N)`: ``mean_k values[b, k * C + codes[n, k]]`` (one ``embedding_bag`` over the transposed values).
        """
        flat = self.flat_codes(item_ids)  # [N, K]
        return F.embedding_bag(flat, values.t().contiguous(), mode="mean").t()  # [B, N]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        log_probs = self.code_log_probs(interaction).reshape(-1, self.n_codes * self.codebook_size)  # [B, K * C]
        if self.decoding == "graph":
            return self.graph_decode(log_probs)
        scores = self.item_means(log_probs)  # [B, n_items]
        return scores.masked_fill(~self.has_codes().unsqueeze(0), float("-inf"))

    def predict(self, interaction) -> torch.Tensor:
        log_probs = self.code_log_probs(interaction).reshape(-1, self.n_codes * self.codebook_size)  # [B, K * C]
        items = interaction[self.ITEM_ID]  # [B]
        scores = log_probs.gather(1, self.flat_codes(items)).mean(dim=1)  # [B]
        return scores.masked_fill(~self.has_codes(items), float("-inf"))

    # --------------------------------------------------------------------------------- graph-constrained decoding
    @torch.no_grad()
    def build_graph(self) -> torch.Tensor:
        r"""Every item's ``rpg_n_edges`` most similar items: `(n_items, E)`. Similarity = mean over codes of
        ``(1 + cos) / 2`` of the two items' code embeddings (rows of ``rpg_graph_chunk_size`` items at a time)."""
        table = F.normalize(self.code_embedding.weight, dim=-1).view(self.n_codes, self.codebook_size, self.d_model)
        code_sim = (1.0 + torch.bmm(table, table.transpose(1, 2))) / 2.0  # [K, C, C]
        real = self.has_codes()  # [N]
        n_edges = min(self.n_edges, int(real.sum()))
        codes_k = torch.arange(self.n_codes, device=table.device)
        rows = []
        for start in range(0, self.n_items, self.graph_chunk_size):
            chunk = self.codes[start : start + self.graph_chunk_size].clamp(min=0)  # [c, K]
            per_code = code_sim[codes_k, chunk]  # [c, K, C]: similarity of the chunk's codes to every code value
            sim = self.item_means(per_code.reshape(chunk.size(0), -1))  # [c, N]
            rows.append(sim.masked_fill(~real.unsqueeze(0), float("-inf")).topk(n_edges, dim=1).indices)
        return torch.cat(rows)  # [N, E]

    @torch.no_grad()
    def graph_decode(self, log_probs: torch.Tensor) -> torch.Tensor:
        r"""The paper's graph-constrained decoding: ``rpg_num_beams`` random items, then ``rpg_propagation_steps``
        times: score the graph neighbours of the beams exactly and keep the best ``rpg_num_beams`` distinct ones.

        Args:
            log_probs (`(B, K * C)`): code log-probabilities.
        Returns:
            `(B, n_items)`: the final beams' exact scores, ``-inf`` for every other item.
        """
        if self._graph is None:
            generator = torch.Generator(device=log_probs.device).manual_seed(self.seed)
            self._graph = (self.build_graph(), generator)
        adjacency, generator = self._graph
        batch = log_probs.size(0)
        beams = torch.randint(1, self.n_items, (batch, self.num_beams), generator=generator,
                              device=log_probs.device)  # [B, beams]
        for _ in range(self.propagation_steps):
            neighbours, _ = adjacency[beams].view(batch, -1).sort(dim=1)  # [B, beams * E]
            repeated = torch.zeros_like(neighbours, dtype=torch.bool)
            repeated[:, 1:] = neighbours[:, 1:] == neighbours[:, :-1]
            scores = log_probs.gather(1, self.flat_codes(neighbours).view(batch, -1))  # [B, beams * E * K]
            scores = scores.view(batch, -1, self.n_codes).mean(dim=-1).masked_fill(repeated, float("-inf"))
            best = scores.topk(min(self.num_beams, scores.size(1)), dim=1)
            beams = neighbours.gather(1, best.indices)  # [B, beams]
        out = torch.full((batch, self.n_items), float("-inf"), device=log_probs.device)
        out = out.scatter_reduce(1, beams, best.values, reduce="amax")  # a repeated pick never hides its item
        return out.masked_fill(~self.has_codes().unsqueeze(0), float("-inf"))

    # ------------------------------------------------------------------------------------------------ new items
    @torch.no_grad()
    def add_items(self, texts: Optional[Sequence[str]] = None, embeddings=None,
                  item_ids: Optional[torch.Tensor] = None, on_overflow: str = "error") -> AddedItems:
        r"""Make new items recommendable without retraining: codes from the stored tokenizer (fitted transform).

        Args:
            texts (`list[str]`) or embeddings (`(M, D)`): the new items' texts (embedded with the configured text
                encoder) or their text embeddings.
            item_ids (`(M,)`, *optional*): existing items without codes to fill (cold-start protocol); by default the
                items are appended as ids ``n_items .. n_items + M - 1``.
            on_overflow: ``"error"`` or ``"skip"`` for items whose code falls outside the trained tables (never with
                OPQ, whose codes are always below the codebook size).
        Returns:
            :class:`~recbole_genrec.model.sequential_recommender.tiger.AddedItems`. Existing items keep their codes
            and their scores.
        """
        from recbole_genrec.preprocess.text_encoder import new_item_embeddings
        from recbole_genrec.store import load_tokenizer_for_config

        emb = new_item_embeddings(self.config, texts, embeddings, on_overflow)  # [M, D]
        raw, _ = load_tokenizer_for_config(self.config).assign(emb, existing=self.codes.cpu().numpy())
        codes = torch.as_tensor(raw, dtype=torch.long, device=self.codes.device)  # [M, K]
        if codes.dim() != 2 or codes.size(1) != self.n_codes:
            raise ValueError(f"the stored tokenizer gives {tuple(codes.shape)} codes but RPG has {self.n_codes}")
        overflow = (codes >= self.codebook_size).any(dim=1)  # [M]
        if overflow.any() and on_overflow == "error":
            raise ValueError(f"{int(overflow.sum())} of {len(codes)} new items need codes beyond the trained "
                             f"codebook size {self.codebook_size}; pass on_overflow='skip' to add them without codes")
        codes = codes.masked_fill(overflow.unsqueeze(1), -1)
        if item_ids is None:
            ids = torch.arange(self.n_items, self.n_items + len(codes), device=self.codes.device)
            self.codes = torch.cat([self.codes, codes])
        else:
            ids = torch.as_tensor(item_ids, dtype=torch.long, device=self.codes.device).view(-1)
            if len(ids) != len(codes):
                raise ValueError(f"{len(ids)} item_ids for {len(codes)} new items")
            self.codes[ids] = codes
        self.n_items = int(self.codes.size(0))
        self._graph = None
        return AddedItems(ids.cpu(), codes.cpu(), overflow.cpu())
