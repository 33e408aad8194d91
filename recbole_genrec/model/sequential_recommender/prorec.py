# coding: utf-8
r"""PRORec: progressive collaborative and semantic knowledge fusion for generative recommendation.

Reference:
    Longtao Xiao, Haozhao Wang, Cheng Wang, Linfei Ji, Yifan Wang, Jieming Zhu, Zhenhua Dong, Rui Zhang, Ruixuan Li.
    "Progressive Collaborative and Semantic Knowledge Fusion for Generative Recommendation." arXiv 2502.06269
    (2025; v3 renamed "UNGER: Generative Recommendation with A Unified Code via Semantic and Collaborative
    Integration"). There is no official code; this is a re-implementation from the paper's description.

Two stages, both run by one ``run_recbole_genrec.py --model=PRORec`` call:

**Stage I -- cross-modality knowledge alignment** (:mod:`recbole_genrec.prorec`), run when the model is constructed
from RecBole's *training* dataset, before the vocabulary exists: a SASRec-style collaborative encoder (next-item CE
over item-ID embeddings) and an AdaLN adapter of the frozen language embedding are trained jointly with an InfoNCE
alignment (``prorec_tau``, weight ``prorec_lambda``); the concatenated aligned embeddings are quantised by
``prorec_code_method`` (default residual k-means) into one *unified code* per item (``prorec_code_levels`` x
``prorec_codebook_size`` + TIGER's
collision level). The result is cached by content hash (items, training sequences, text embeddings, stage-I
hyperparameters, seed): a rerun loads it and logs the cache hit. The NMI between the first level of the unified
code and of text-only / ID-only codes is logged and written to ``stage1.json`` in the cache folder.

**Stage II -- in-modality knowledge distillation**: TIGER (:class:`~recbole_genrec.model.sequential_recommender.
tiger.TIGER`: T5 encoder-decoder, token cross-entropy, trie-constrained beam search) generates the unified codes. A
projection of the model's representation is pulled, weight ``prorec_mu``, towards the target item's stage-I
collaborative embedding and towards its semantic embedding, each with its own head and inside its own modality:

.. math::

    \mathcal{L} = \mathcal{L}_{\text{TIGER}} + \mu\,\big(\ell(P_c h, E^{id}_{y}; E^{id}) + \ell(P_s h, E^{sem}_{y}; E^{sem})\big)

Choices the paper leaves open (all exposed in ``properties/model/PRORec.yaml``):

* representation ``h`` (``prorec_distill_hidden``): ``encoder_mean`` (default) = masked mean of the encoder's last
  hidden states -- the user representation before any target code is seen; ``decoder_last`` = the decoder's last
  teacher-forced hidden state;
* heads ``P_c: d_model -> d``, ``P_s: d_model -> D``: one linear layer each;
* loss ``\ell`` (``prorec_distill_loss``): ``infonce`` (default) = softmax over the cosine similarities (/
  ``prorec_distill_tau``) with *every* item of that modality's frozen table, the target being the positive;
  ``cosine`` = ``1 - cos(P h, E_y)``;
* semantic table ``E^{sem}`` (``prorec_distill_semantic``): ``lm`` (default) = the raw language embedding,
  ``adapted`` = stage I's adapter output;
* stage I (see :mod:`recbole_genrec.prorec.stage1`): SASRec encoder (the paper's v3 uses DIN), AdaLN conditioned on
  the item's log-popularity bucket, symmetric InfoNCE over uniformly sampled items, unified embedding = concatenation
  of the L2-normalised ID and adapted-text embeddings, residual k-means (``prorec_code_method``; hierarchical
  k-means is the option) with TIGER's extra collision level.

Baselines as switches: ``prorec_code_source: aligned | text | id | concat`` (codes of the unified embedding, of the
text embedding alone, of the ID embedding alone, of the naive ``[E^{id}; E^{text}]`` concatenation -- the "semantic
domination" case) and ``prorec_distill: False``, which makes ``calculate_loss`` exactly TIGER's loss.

New items (:meth:`PRORec.new_item_codes`, used by TIGER's ``add_items``): an item that arrives after training has
no ID embedding and no training interaction. With ``prorec_code_source: aligned`` its unified embedding is
``[0 ; unit(A(e_text, bucket 0))]``: the ID half is zero and the adapter sees its text alone with the popularity
bucket of an item without interactions; ``text`` uses its text embedding, ``concat`` ``[0 ; e_text]``; ``id`` cannot
encode new items (an error says so). The stage-I tokenizer of that source and its collision rule give the code.

Other deviations: everything TIGER deviates in (RecBole data pipeline and leave-one-out full-ranking evaluation,
:class:`~recbole_genrec.trainer.GenerativeTrainer`'s optimiser/schedule, constrained beam search) applies; the text
encoder is the offline all-MiniLM-L6-v2 (the paper uses larger LMs); stage II's T5 sizes are TIGER's.
"""

import numpy as np
import torch
from torch import nn

from recbole_genrec.prorec import CODE_SOURCES, catalogue_info_nce, run_stage1
from recbole_genrec.generative import CodeTable
from recbole_genrec.model.sequential_recommender.tiger import TIGER
from recbole_genrec.preprocess.features import item_embeddings

DISTILL_HIDDEN = ("encoder_mean", "decoder_last")
DISTILL_LOSSES = ("infonce", "cosine")
DISTILL_SEMANTIC = ("lm", "adapted")


class PRORec(TIGER):
    r"""TIGER over stage-I unified codes, with in-modality knowledge distillation.

    Attributes:
        stage1 (:class:`~recbole_genrec.prorec.stage1.Stage1Result`): stage-I artifacts (codes of every source,
            embeddings, NMI report, cache folder).
        collab_table (`(n_items, d)`), semantic_table (`(n_items, D)`): frozen distillation targets (non-persistent
            buffers: rebuilt from the stage-I cache when a checkpoint is loaded).
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # runs (or reuses) stage I in _build_code_table
        stage1, text = self.stage1, item_embeddings(dataset)  # text: [n_items, D] (row 0 zeros)
        self.logger.info(f"PRORec: {self.code_source} codes, codebook sizes {self.code_table.codebook_sizes}, "
                         f"vocabulary {self.code_table.vocab_size}")

        self.distill = bool(config["prorec_distill"])
        self.mu = float(config["prorec_mu"])
        self.distill_hidden = str(config["prorec_distill_hidden"])
        self.distill_loss = str(config["prorec_distill_loss"])
        self.distill_tau = float(config["prorec_distill_tau"])
        semantic = str(config["prorec_distill_semantic"])
        for value, allowed, key in ((self.distill_hidden, DISTILL_HIDDEN, "prorec_distill_hidden"),
                                    (self.distill_loss, DISTILL_LOSSES, "prorec_distill_loss"),
                                    (semantic, DISTILL_SEMANTIC, "prorec_distill_semantic")):
            if value not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {value!r}")
        if self.distill:
            semantic_table = text if semantic == "lm" else torch.from_numpy(stage1.adapted_text)
            self.register_buffer("collab_table", torch.from_numpy(stage1.id_emb).float(), persistent=False)
            self.register_buffer("semantic_table", semantic_table.float().clone(), persistent=False)
            d_model = self.backbone.d_model
            self.collab_head = nn.Linear(d_model, self.collab_table.size(1))  # P_c
            self.semantic_head = nn.Linear(d_model, self.semantic_table.size(1))  # P_s

    def _build_code_table(self, config, dataset) -> CodeTable:
        """Stage I (cached): the unified codes of ``prorec_code_source`` replace the hook's semantic IDs."""
        self.code_source = str(config["prorec_code_source"])
        if self.code_source not in CODE_SOURCES:
            raise ValueError(f"prorec_code_source must be one of {CODE_SOURCES}, got {self.code_source!r}")
        self.stage1 = run_stage1(config, dataset, item_embeddings(dataset))
        codes = torch.from_numpy(np.asarray(self.stage1.codes[self.code_source], dtype=np.int64))  # [n_items, L']
        codes[0] = -1  # the padding item
        return CodeTable(codes, self.stage1.codebook_sizes[self.code_source])

    # -------------------------------------------------------------------------------------------- new items
    def new_item_codes(self, embeddings):
        r"""Unified codes `(M, L')` of new items from their text embeddings `(M, D)` (see the module docstring)."""
        from safetensors.torch import load_file

        from recbole_genrec.prorec.stage1 import build_modules, stage1_params
        from recbole_genrec.store import load_tokenizer, prorec_tokenizer_stem

        files = self.stage1.files
        if self.code_source == "id":
            raise ValueError("prorec_code_source: id has no code for an item without an ID embedding; new items need "
                             "the aligned, text or concat source")
        text = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))  # [M, D]
        if self.code_source == "text":
            vectors = text.numpy()
        elif self.code_source == "concat":
            vectors = np.concatenate([np.zeros((len(text), self.stage1.id_emb.shape[1]), np.float32), text.numpy()], 1)
        else:
            params = stage1_params(self.config)
            adapter = build_modules(params, self.n_items, text.size(1))[1]
            adapter.load_state_dict(self.stage1.adapter_state or load_file(files["adapter"]))
            adapter.eval()
            with torch.no_grad():
                adapted = adapter(text, torch.zeros(len(text), dtype=torch.long))  # bucket 0: no interactions
            adapted = torch.nn.functional.normalize(adapted, dim=-1).numpy()
            vectors = np.concatenate([np.zeros_like(adapted), adapted], axis=1)  # [M, d + d]
        tokenizer = self.stage1.tokenizers.get(self.code_source) or load_tokenizer(
            prorec_tokenizer_stem(self.stage1.folder, self.code_source))
        codes, _ = tokenizer.assign(vectors, existing=self.code_table.codes.cpu().numpy())
        return codes

    # -------------------------------------------------------------------------------------------- distillation
    def distill_representation(self, out):
        r"""The representation ``h`` that is distilled: `(B, d_model)` float32 from a :class:`TIGEROutput`."""
        if self.distill_hidden == "decoder_last":
            return out.decoder_hidden[:, -1].float()  # [B, d]
        mask = out.attention_mask.unsqueeze(-1).to(out.encoder_hidden.dtype)  # [B, S, 1]
        summed = (out.encoder_hidden * mask).sum(dim=1)  # [B, d]
        return (summed / mask.sum(dim=1).clamp(min=1.0)).float()

    def _modality_loss(self, projected, targets, table):
        r"""Distillation loss of `(B, e)` projections towards rows ``targets`` `(B,)` of `(n_items, e)` ``table``."""
        if self.distill_loss == "infonce":
            return catalogue_info_nce(projected, targets, table, self.distill_tau)
        return (1.0 - nn.functional.cosine_similarity(projected, table[targets], dim=-1)).mean()

    def distillation_losses(self, out, items):
        r"""``(collaborative, semantic)`` scalar losses for a :class:`TIGEROutput` and `(B,)` target items."""
        hidden = self.distill_representation(out)  # [B, d_model]
        collab = self._modality_loss(self.collab_head(hidden), items, self.collab_table)
        semantic = self._modality_loss(self.semantic_head(hidden), items, self.semantic_table)
        return collab, semantic

    loss_names = ("generation", "collab distill", "semantic distill")  # the parts of calculate_loss, as logged

    def calculate_loss(self, interaction):
        r"""TIGER's token cross-entropy, plus ``prorec_mu`` x the two distillation losses when ``prorec_distill``.

        Returns TIGER's scalar loss unchanged when ``prorec_distill`` is False; otherwise the tuple
        ``(generation, mu * collaborative, mu * semantic)`` (RecBole's trainers sum it and log each part).
        """
        if not self.distill:
            return super().calculate_loss(interaction)
        out = self.forward(interaction)
        collab, semantic = self.distillation_losses(out, interaction[self.POS_ITEM_ID])
        return out.loss, self.mu * collab, self.mu * semantic
