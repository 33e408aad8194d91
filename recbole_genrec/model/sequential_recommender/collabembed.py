r"""CollabEmbed: collaboration-aware enhancement of content item embeddings.

Reference
---------
SAIL-Embedding Technical Report: Omni-modal Embedding Foundation Model (ByteDance Douyin, 2025),
its "collaboration-aware recommendation enhancement" training stage. The report's model and data are
not public; this file adapts the idea to RecBole datasets and a frozen text encoder.

Taken from the report (the idea)
--------------------------------
- Content item embeddings are enhanced *after* content pre-training by distilling collaborative
  signal from recommendation models into them, with contrastive (InfoNCE) objectives:
  **sequence-to-item** (an item's embedding is pulled towards a sequential recommender's
  representation of the user history that preceded it), **ID-to-item** (towards the item's ID
  embedding in a trained recommender) and **user-history positives** (items a user engaged with
  close together are positives of each other).
- In-batch negatives, plus hard negatives mined by similarity while skipping candidates so similar
  that they are probably positives.

Our adaptation
--------------
- The enhanced encoder is a small MLP **tower** over the frozen LM item embeddings
  (``item_embeddings(dataset)``, all-MiniLM-L6-v2 by default) instead of fine-tuning an omni-modal
  foundation model: ``Linear(D, collab_hidden_size) -> GELU -> Dropout -> Linear(., d)``, output
  L2-normalised. ``d`` is the width of the teacher's item table (``collab_teacher_params.hidden_size``
  for SASRec), so tower vectors and teacher vectors are compared directly by cosine, with no heads.
- Teacher: a RecBole sequential model (``collab_teacher_model``, SASRec by default) trained by
  :class:`recbole_genrec.trainer.collabembed_trainer.CollabEmbedTrainer` on the **training split only** (fixed
  ``collab_teacher_epochs``, no early stopping on validation) before the tower, or loaded from a
  RecBole checkpoint (``collab_teacher_checkpoint``) of the same dataset and filtering. It is frozen
  (``requires_grad=False``, always in eval mode) while the tower trains.
- Losses, each weighted (weight 0 removes the term), temperature ``collab_tau``; for a training
  sample (history :math:`i_{<t}`, target :math:`i_t`) and tower vector :math:`z_i`:

  (a) ``collab_seq_weight``: anchor = teacher(history) [B, d], positive :math:`z_{i_t}`;
  (b) ``collab_id_weight``: anchor = teacher ID table row of :math:`i_t` (``teacher.item_embedding``;
      with CE-trained SASRec the table whose dot product with (a)'s vector gives next-item logits),
      positive :math:`z_{i_t}`. Another teacher's table is used with ``collab_teacher_model`` (any
      RecBole sequential model with ``item_embedding`` and a [B, H] ``forward``, e.g. GRU4Rec, NARM) or a
      checkpoint in ``collab_teacher_checkpoint``; general models (LightGCN, ...) are not supported;
  (c) ``collab_hist_weight``: anchor :math:`z_{i_t}`, positive :math:`z_p`, ``p`` drawn uniformly from
      the last ``collab_window`` items of the history (items consumed close together).

  Negatives of every term: the other rows' positives (masked where they are the same item) and, if
  ``collab_hard_neg_num > 0``, that many items per anchor mined among all items' tower vectors by
  cosine to the anchor, excluding the positive, the user's history and anything above
  ``collab_hard_neg_threshold`` (probable false negatives). One InfoNCE direction per term
  (anchor -> tower candidates); the report's exact losses, balancing and mining schedule are not
  reproduced.
- Recommendation (so the model appears in comparison tables): ``full_sort_predict`` = cosine between
  the user's history vector (``collab_user_pooling``: ``mean`` of the history's tower vectors, or the
  ``last`` item's) and every item's tower vector. It uses the tower only (no teacher at inference):
  it measures what the exported embeddings themselves carry.
- Export: :meth:`CollabEmbed.export_embeddings` writes the unit tower vectors of all items, aligned
  with the item tokens, through ``recbole_genrec.store.save_item_embeddings(config,
  'collab', ...)``; other models read them with ``item_embedding_source: collab`` (TIGER/DiscRec
  semantic IDs, AlphaRec's LM table). The trainer exports after reloading the best checkpoint.
  Consumers must evaluate on a split whose valid/test interactions are outside CollabEmbed's
  training split (e.g. the same leave-one-out ``TO`` split), otherwise the embeddings leak them.
"""

import hashlib
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_genrec.collabembed import losses
from recbole_genrec.collabembed.teacher import build_teacher, load_teacher, train_teacher
from recbole_genrec.data import coldstart
from recbole_genrec.store import save_item_embeddings
from recbole_genrec.preprocess.features import item_embeddings

logger = logging.getLogger(__name__)

EXPORT_SOURCE = "collab"


class CollabEmbed(SequentialRecommender):
    r"""Content tower over frozen LM item embeddings, aligned with a frozen sequential teacher."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.config = config
        source = str(config["item_embedding_source"])
        if source == EXPORT_SOURCE:
            raise ValueError("CollabEmbed must start from content embeddings: set item_embedding_source: text "
                             "(it would otherwise be trained on its own previous output)")
        self.seq_weight = float(config["collab_seq_weight"])
        self.id_weight = float(config["collab_id_weight"])
        self.hist_weight = float(config["collab_hist_weight"])
        if min(self.seq_weight, self.id_weight, self.hist_weight) < 0:
            raise ValueError("collab_*_weight must be >= 0")
        if self.seq_weight == self.id_weight == self.hist_weight == 0:
            raise ValueError("all of collab_seq_weight, collab_id_weight, collab_hist_weight are 0: nothing to train")
        self.tau = float(config["collab_tau"])
        self.window = int(config["collab_window"])
        self.hard_neg_num = int(config["collab_hard_neg_num"])
        self.hard_neg_threshold = float(config["collab_hard_neg_threshold"])
        self.pooling = str(config["collab_user_pooling"])
        if self.pooling not in ("mean", "last"):
            raise ValueError(f"collab_user_pooling must be mean or last, got {self.pooling}")

        item_lm = item_embeddings(dataset).float()  # [n_items, D], row 0 zeros
        if item_lm.shape[0] != self.n_items:
            raise ValueError(f"item_embeddings has {item_lm.shape[0]} rows, dataset has {self.n_items} items")
        self.register_buffer("item_lm", item_lm, persistent=False)
        self.item_tokens = [str(t) for t in dataset.field2id_token[self.ITEM_ID][1:]]  # row i+1 <-> token i
        self.held_out_key = coldstart.held_out_key(coldstart.held_out_tokens(config, self.item_tokens)) \
            if coldstart.enabled(config) else None

        checkpoint = config["collab_teacher_checkpoint"]
        if checkpoint:
            self.teacher, self.teacher_name = load_teacher(config, dataset, checkpoint)
        else:
            self.teacher_name = str(config["collab_teacher_model"])
            self.teacher = build_teacher(config, dataset, self.teacher_name, config["collab_teacher_params"])
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        # Saved with the checkpoint, so a reloaded model knows its teacher is trained.
        self.register_buffer("teacher_ready", torch.tensor(bool(checkpoint)))

        dim = self.teacher.item_embedding.embedding_dim
        hidden = int(config["collab_hidden_size"])
        self.tower = nn.Sequential(
            nn.Linear(item_lm.shape[1], hidden), nn.GELU(), nn.Dropout(float(config["collab_dropout"])),
            nn.Linear(hidden, dim),
        )
        for module in self.tower:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ teacher
    def train(self, mode=True):
        """The tower follows ``mode``; the frozen teacher always stays in eval mode (no dropout)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def fit_teacher(self, train_data, show_progress=False):
        """Train the teacher on RecBole's *training* dataloader, then freeze it. Returns per-epoch losses."""
        epochs = int(self.config["collab_teacher_epochs"])
        lr = float(self.config["collab_teacher_learning_rate"])
        logger.info(f"training teacher {self.teacher_name} for {epochs} epochs on the training split")
        history = train_teacher(self.teacher, train_data, epochs, lr, show_progress=show_progress)
        self.teacher_ready.fill_(True)
        self.teacher.eval()
        return history

    @torch.no_grad()
    def teacher_history(self, item_seq, item_seq_len):
        """Teacher representation of each history: [B, T], [B] -> [B, d] (unit vectors)."""
        return F.normalize(self.teacher(item_seq, item_seq_len), dim=-1)

    @torch.no_grad()
    def teacher_items(self, item_ids):
        """Teacher ID embeddings: [*] -> [*, d] (unit vectors)."""
        return F.normalize(self.teacher.item_embedding(item_ids), dim=-1)

    # ------------------------------------------------------------------ tower
    def encode(self, item_ids):
        """Tower vectors of ``item_ids`` [*] -> [*, d] (unit vectors)."""
        return F.normalize(self.tower(self.item_lm[item_ids]), dim=-1)

    def item_vectors(self):
        """Tower vectors of all items: [n_items, d] (unit vectors; row 0, padding, zeros)."""
        vectors = F.normalize(self.tower(self.item_lm), dim=-1)
        return torch.cat([torch.zeros_like(vectors[:1]), vectors[1:]], dim=0)

    def forward(self, item_seq, item_seq_len):
        """User (history) vector from tower vectors: [B, T], [B] -> [B, d] (unit vectors)."""
        if self.pooling == "last":
            last = item_seq.gather(1, (item_seq_len - 1).clamp(min=0).unsqueeze(1)).squeeze(1)  # [B]
            return self.encode(last)
        vectors = self.encode(item_seq)  # [B, T, d]
        valid = (item_seq > 0).unsqueeze(-1).float()  # [B, T, 1]
        pooled = (vectors * valid).sum(1) / valid.sum(1).clamp(min=1.0)  # [B, d]
        return F.normalize(pooled, dim=-1)

    # ------------------------------------------------------------------ losses
    def loss_terms(self, interaction):
        """The weighted loss terms present: dict with a subset of ``seq``, ``id``, ``hist`` (scalars).

        A term whose weight is 0 is absent (not computed).
        """
        item_seq = interaction[self.ITEM_SEQ]  # [B, T]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        target = interaction[self.POS_ITEM_ID]  # [B]
        hard = self.hard_neg_num > 0
        if hard:
            all_vectors = self.item_vectors()  # [N, d], with gradients (hard negatives are pushed away)
            z_target = all_vectors[target]  # [B, d]
            exclude = losses.history_mask(item_seq, self.n_items, extra=(target,))  # [B, N]
        else:
            z_target = self.encode(target)  # [B, d]

        def hard_negatives(anchor, exclude_mask):
            if not hard:
                return None, None
            index, valid = losses.mine_hard_negatives(anchor.detach(), all_vectors.detach(), exclude_mask,
                                                      self.hard_neg_threshold, self.hard_neg_num)  # [B, K]
            return all_vectors[index], valid  # [B, K, d], [B, K]

        terms = {}
        if self.seq_weight > 0:
            anchor = self.teacher_history(item_seq, item_seq_len)  # [B, d]
            neg, valid = hard_negatives(anchor, exclude if hard else None)
            terms["seq"] = self.seq_weight * losses.masked_info_nce(anchor, z_target, target, self.tau, hard=neg,
                                                             hard_valid=valid)
        if self.id_weight > 0:
            anchor = self.teacher_items(target)  # [B, d]
            neg, valid = hard_negatives(anchor, exclude if hard else None)
            terms["id"] = self.id_weight * losses.masked_info_nce(anchor, z_target, target, self.tau, hard=neg,
                                                           hard_valid=valid)
        if self.hist_weight > 0:
            positive_items = losses.window_positives(item_seq, item_seq_len, self.window)  # [B]
            z_positive = all_vectors[positive_items] if hard else self.encode(positive_items)  # [B, d]
            neg, valid = hard_negatives(z_target, exclude if hard else None)
            terms["hist"] = self.hist_weight * losses.masked_info_nce(z_target, z_positive, positive_items, self.tau,
                                                               anchor_items=target, hard=neg, hard_valid=valid)
        return terms

    def calculate_loss(self, interaction):
        if not bool(self.teacher_ready) and (self.seq_weight > 0 or self.id_weight > 0):
            raise RuntimeError("CollabEmbed's teacher is untrained: train with CollabEmbedTrainer (it calls "
                               "fit_teacher on the training split), call model.fit_teacher(train_data), or set "
                               "collab_teacher_checkpoint")
        return sum(self.loss_terms(interaction).values())

    # ------------------------------------------------------------------ recommendation
    def predict(self, interaction):
        user = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, d]
        return (user * self.encode(interaction[self.ITEM_ID])).sum(-1)  # [B]

    def full_sort_predict(self, interaction):
        user = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, d]
        return user @ self.item_vectors().t()  # [B, n_items]

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def enhanced_embeddings(self):
        """Unit tower vectors of the real items: float32 numpy [n_items - 1, d], row i = ``item_tokens[i]``."""
        was_training = self.training
        self.eval()
        matrix = self.item_vectors()[1:].float().cpu().numpy()
        self.train(was_training)
        return matrix

    def export_embeddings(self):
        """Save :meth:`enhanced_embeddings` as item-embedding source ``collab`` in the dataset's cache.

        Returns the path of ``embeddings-collab.npy``. The key records the text embeddings, the teacher,
        the loss weights and a hash of the tower weights.
        """
        matrix = self.enhanced_embeddings()
        digest = hashlib.sha256()
        for name, tensor in sorted(self.tower.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().float().numpy().tobytes())
        hashes = self.config["genrec_feature_hashes"] or {}
        key_extra = {
            "model": "CollabEmbed",
            "text_embeddings": hashes.get("text_emb"),
            "teacher": self.teacher_name,
            "weights": {"seq": self.seq_weight, "id": self.id_weight, "hist": self.hist_weight},
            "tower_sha256": digest.hexdigest(),
            "held_out": self.held_out_key,  # the cold-start set its training never saw (None: no protocol)
        }
        return save_item_embeddings(self.config, EXPORT_SOURCE, self.item_tokens, matrix, key_extra)
