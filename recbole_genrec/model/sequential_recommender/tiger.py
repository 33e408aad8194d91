# coding: utf-8
"""TIGER: generative retrieval over semantic IDs with a T5 encoder-decoder.

Reference:
    Shashank Rajput, Nikhil Mehta, Anima Singh, Raghunandan Keshavan, Trung Vu, Lukasz Heldt, Lichan Hong, Yi Tay,
    Vinh Q. Tran, Jonah Samost, Maciej Kula, Ed H. Chi, Maheswaran Sathiamoorthy.
    "Recommender Systems with Generative Retrieval." NeurIPS 2023.

Every item is a tuple of ``L`` semantic-ID codes (RQ-VAE over its text embedding, 3 levels of 256 codes plus one
collision level in the paper), built by the preprocessing hook (``genrec_features: [text_emb, sid]``).  The user
history is the flattened code sequence of its last ``MAX_ITEM_LIST_LENGTH`` items (optionally preceded by a hashed
user token); a T5 encoder-decoder is trained with token cross-entropy to emit the codes of the next item, and
retrieval is a beam search over the decoder restricted to existing semantic IDs.

Deviations from the paper (there is no official code):

* retrieval uses **trie-constrained** beam search, so every returned tuple is a real item (the paper decodes freely
  and discards invalid IDs, reporting that they are rare);
* the item sequences and targets are RecBole's (every prefix of a training sequence is one sample, leave-one-out
  evaluation with full ranking), and the returned items are ranked by their beam score (summed log-probability);
  items outside the beam get ``-inf``, so only ``beam_size`` items per user can be hit;
* the user token is hashed with a fixed multiplicative hash of RecBole's internal user id into
  ``user_token_buckets`` extra vocabulary entries and placed right before the first history token (the paper
  hashes raw user ids into 2000 tokens and prepends them; it does not give the hash);
* the optimizer and schedule are :class:`~recbole_genrec.trainer.GenerativeTrainer`'s (AdamW, warm-up, cosine or
  inverse-square-root decay) instead of the paper's 200k steps at lr 0.01 with inverse-square-root decay;
* the tokenizer is configurable (``sid_method: rqvae | rkmeans | hkmeans``); the paper uses RQ-VAE only;
* new items (``add_items``, the cold-start protocol of :mod:`recbole_genrec.data.coldstart`) get a full code tuple
  from the stored tokenizer, the collision level included (one past the largest extra code of their tuple), and
  compete in the constrained beam like every other item; the paper's cold-start experiment instead retrieves unseen
  items whose first levels match a generated ID and controls their share of the top K with a parameter
  (epsilon; here the evaluation key ``coldstart_epsilon``). A new item whose extra code would exceed the trained extra level cannot be added (``on_overflow``).
"""

from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_genrec.generative import PAD_TOKEN_ID, CodeTable, T5Backbone, scores_to_full
from recbole_genrec.generative.batching import trim_left_padding
from recbole_genrec.preprocess.features import codebook_sizes, item_codes
from recbole_genrec.validation import check_beam

_USER_HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash constant (2^32 / golden ratio)


class TIGEROutput(NamedTuple):
    r"""Everything one teacher-forced forward pass computes (for subclasses that add losses).

    Attributes:
        loss: scalar token cross-entropy over the target items' ``L`` codes.
        logits (`(B, L, V)`): decoder logits.
        encoder_hidden (`(B, S, d_model)`): encoder last hidden states.
        decoder_hidden (`(B, L, d_model)`): decoder last hidden states.
        input_ids (`(B, S)`), attention_mask (`(B, S)`): encoder inputs.
        target_tokens (`(B, L)`): target tokens (``-100`` for targets without a semantic ID).
    """

    loss: torch.Tensor
    logits: torch.Tensor
    encoder_hidden: torch.Tensor
    decoder_hidden: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_tokens: torch.Tensor


class AddedItems(NamedTuple):
    r"""What :meth:`TIGER.add_items` did.

    Attributes:
        item_ids (`(M,)`): the ids the new items hold (appended, or the rows that were filled).
        codes (`(M, L)`): their code tuples (``-1`` rows for skipped items).
        skipped (`(M,)` bool): items left without a code because their tuple falls outside the trained vocabulary
            (``on_overflow="skip"``); they exist but are never generated.
    """

    item_ids: torch.Tensor
    codes: torch.Tensor
    skipped: torch.Tensor


class TIGER(SequentialRecommender):
    r"""TIGER: a T5 encoder-decoder that generates the semantic ID of the next item.

    Extension points (DiscRec, PRORec and other generative models reuse everything else):

    * ``_build_code_table(config, dataset) -> CodeTable``: override to generate other codes than the hook's
      semantic IDs (PRORec's stage-I unified codes).
    * ``_build_backbone(config, vocab_size) -> T5Backbone``: override to return a :class:`T5Backbone` subclass
      whose ``encoder_embeds`` / ``decoder_embeds`` hooks change the token embeddings (DiscRec).
      ``vocab_size`` already includes the user-token block.
    * ``forward(interaction) -> TIGEROutput``: one teacher-forced pass with the loss and the encoder/decoder hidden
      states; ``calculate_loss`` returns ``forward(...).loss``, so a subclass adds auxiliary losses with
      ``out = self.forward(interaction); return out.loss + aux(out.encoder_hidden, ...)`` (PRORec).
    * ``encoder_inputs(item_seq, item_seq_len, user_ids=None)``: the encoder token ids and mask of a batch.
    * ``self.code_table`` (:class:`CodeTable`, a sub-module: checkpoints carry it) maps items <-> tokens.

    Inference: ``full_sort_predict`` runs trie-constrained beam search (``beam_size`` beams, users in chunks of
    ``beam_batch_size``) and scatters the beam scores into `(B, n_items)` (``-inf`` outside the beam);
    ``predict`` is the exact teacher-forced log-likelihood of ``ITEM_ID``'s codes, equal to its beam score;
    ``recommend(item_seq, item_seq_len, k)`` returns item ids.
    """

    input_type = InputType.POINTWISE  # (history, next item) samples, no negatives

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        check_beam(config)  # before the code table: PRORec's stage I trains there
        self.config = config  # read by add_items (text encoder, stored tokenizer)
        self.code_table = self._build_code_table(config, dataset)
        if self.code_table.n_items != self.n_items:
            raise ValueError(f"the code table has {self.code_table.n_items} rows but the dataset {self.n_items} items")

        self.beam_size = int(config["beam_size"])
        self.beam_batch_size = max(1, int(config["beam_batch_size"]))

        self.use_user_token = bool(config["use_user_token"])
        self.user_token_buckets = int(config["user_token_buckets"]) if self.use_user_token else 0
        if self.use_user_token and self.user_token_buckets < 1:
            raise ValueError("use_user_token needs user_token_buckets >= 1")
        self.user_token_offset = self.code_table.vocab_size  # user tokens follow the semantic-ID tokens
        vocab_size = self.code_table.vocab_size + self.user_token_buckets
        self.backbone = self._build_backbone(config, vocab_size)
        self.backbone.lean_forward = bool(config["t5_lean_forward"])  # full-sequence passes: lean_t5 or HF
        # a checkpoint may carry a code table with added items: n_items follows the loaded table
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "n_items", module.code_table.n_items))

    # ------------------------------------------------------------------------------------------------ building
    def _build_code_table(self, config, dataset) -> CodeTable:
        """Items -> semantic IDs: the preprocessing hook's codes; override to generate other codes (PRORec: its
        stage-I unified codes). Called once, before the backbone is built (its vocabulary follows the table)."""
        return CodeTable(item_codes(dataset), codebook_sizes(dataset))

    def _build_backbone(self, config, vocab_size: int) -> T5Backbone:
        """The T5 encoder-decoder; override to plug in a :class:`T5Backbone` subclass."""
        return T5Backbone(vocab_size, **self._backbone_kwargs(config))

    @staticmethod
    def _backbone_kwargs(config) -> dict:
        """T5 sizes from the config, shared by every backbone built on TIGER."""
        return dict(
            d_model=config["d_model"],
            d_ff=config["d_ff"],
            num_layers=config["num_encoder_layers"],
            num_decoder_layers=config["num_decoder_layers"],
            num_heads=config["num_heads"],
            d_kv=config["d_kv"],
            dropout_rate=config["dropout_rate"],
            feed_forward_proj=config["feed_forward_proj"],
        )

    # -------------------------------------------------------------------------------------------------- inputs
    def user_tokens(self, user_ids: torch.Tensor) -> torch.Tensor:
        r"""Hashed user token ids: `(B,)` RecBole user ids -> `(B,)` token ids in the user-token block."""
        bucket = torch.remainder(user_ids.long() * _USER_HASH_MULTIPLIER, self.user_token_buckets)  # [B]
        return bucket + self.user_token_offset

    def encoder_inputs(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Encoder token ids of the histories.

        Args:
            item_seq (`torch.LongTensor` of shape `(B, T)`), item_seq_len (`(B,)`): RecBole item sequences.
            user_ids (`torch.LongTensor` of shape `(B,)`, *optional*): needed when ``use_user_token``.
        Returns:
            input_ids, attention_mask (`torch.LongTensor` of shape `(B, S)`), left-padded, ending with EOS;
            ``S = T * L + 1``, plus one when the user token is placed right before the first history token.
        """
        input_ids, attention_mask = self.code_table.history_tokens(item_seq, item_seq_len)  # [B, T*L+1] x2
        if not self.use_user_token:
            return input_ids, attention_mask
        if user_ids is None:
            raise ValueError("this TIGER uses a user token (use_user_token: True): pass the user ids")
        batch_size, seq_len = input_ids.shape
        pad = input_ids.new_full((batch_size, 1), PAD_TOKEN_ID)  # [B, 1]
        input_ids = torch.cat([pad, input_ids], dim=1)  # [B, S]
        user_pos = (seq_len - attention_mask.sum(dim=1)).unsqueeze(1)  # [B, 1] slot before the first real token
        input_ids = input_ids.scatter(1, user_pos, self.user_tokens(user_ids.to(input_ids.device)).unsqueeze(1))
        attention_mask = (input_ids != PAD_TOKEN_ID).long()  # [B, S]
        return input_ids, attention_mask

    def _interaction_inputs(self, interaction) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Encoder inputs of a batch without the leading columns that are padding in every row (exact, see
        :func:`~recbole_genrec.generative.batching.trim_left_padding`): `(B, S')` ids and mask."""
        user_ids = interaction[self.USER_ID] if self.use_user_token else None
        input_ids, attention_mask = self.encoder_inputs(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                                        user_ids)
        return trim_left_padding(input_ids, attention_mask, self.backbone.trim_multiple)

    def target_tokens(self, item_ids: torch.Tensor) -> torch.Tensor:
        r"""`(B,)` item ids -> `(B, L)` target tokens, ``-100`` (ignored by the loss) for items without codes."""
        tokens = self.code_table.item_tokens(item_ids)  # [B, L]
        return tokens.masked_fill(tokens == PAD_TOKEN_ID, -100)

    # -------------------------------------------------------------------------------------------------- training
    def forward(self, interaction) -> TIGEROutput:
        r"""Teacher-forced pass on ``POS_ITEM_ID``'s codes; returns loss, logits and hidden states."""
        input_ids, attention_mask = self._interaction_inputs(interaction)  # [B, S] x2
        target = self.target_tokens(interaction[self.POS_ITEM_ID])  # [B, L]
        loss, logits, encoder_hidden, decoder_hidden = self.backbone.forward_loss(input_ids, attention_mask, target)
        return TIGEROutput(loss, logits, encoder_hidden, decoder_hidden, input_ids, attention_mask, target)

    def calculate_loss(self, interaction) -> torch.Tensor:
        return self.forward(interaction).loss

    # ------------------------------------------------------------------------------------------------- inference
    def predict(self, interaction) -> torch.Tensor:
        r"""Log-likelihood of ``ITEM_ID``'s semantic ID given the history: float32 `(B,)`; ``-inf`` without codes."""
        input_ids, attention_mask = self._interaction_inputs(interaction)  # [B, S] x2
        items = interaction[self.ITEM_ID]  # [B]
        target = self.code_table.item_tokens(items)  # [B, L]
        chunk = self.beam_batch_size * self.beam_size
        scores = torch.cat(
            [
                self.backbone.sequence_log_prob(input_ids[i : i + chunk], attention_mask[i : i + chunk],
                                                target[i : i + chunk])
                for i in range(0, items.size(0), chunk)
            ]
        )  # [B]
        has_codes = (target != PAD_TOKEN_ID).all(dim=1)  # [B]
        return scores.masked_fill(~has_codes, float("-inf"))

    def beam_search(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, beam_size: Optional[int] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Constrained beam search in chunks of ``beam_batch_size`` users (memory grows with users x beams).

        Returns:
            item_ids `(B, beam)` (0 = padding) and float32 scores `(B, beam)`, best first.
        """
        beam_size = beam_size or self.beam_size
        items, scores = [], []
        for i in range(0, input_ids.size(0), self.beam_batch_size):
            chunk_items, chunk_scores = self.backbone.beam_search(
                input_ids[i : i + self.beam_batch_size], attention_mask[i : i + self.beam_batch_size],
                self.code_table, beam_size,
            )
            items.append(chunk_items)
            scores.append(chunk_scores)
        return torch.cat(items), torch.cat(scores)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        r"""Beam scores of the ``beam_size`` generated items, ``-inf`` for all others: float32 `(B, n_items)`."""
        input_ids, attention_mask = self._interaction_inputs(interaction)
        item_ids, scores = self.beam_search(input_ids, attention_mask)  # [B, beam] x2
        return scores_to_full(item_ids, scores, self.code_table.n_items)

    # ------------------------------------------------------------------------------------------- new items
    def new_item_codes(self, embeddings: np.ndarray) -> np.ndarray:
        r"""Code tuples `(M, L)` for new items' text embeddings `(M, D)`: the hook's stored tokenizer and its
        collision rule, with the current code table as the codes already taken (override for other codes)."""
        from recbole_genrec.store import load_tokenizer_for_config

        codes, _ = load_tokenizer_for_config(self.config).assign(embeddings, existing=self.code_table.codes.cpu().numpy())
        return codes

    @torch.no_grad()
    def add_items(
        self,
        texts: Optional[Sequence[str]] = None,
        embeddings=None,
        item_ids: Optional[torch.Tensor] = None,
        on_overflow: str = "error",
    ) -> AddedItems:
        r"""Make new items recommendable without retraining: codes from their text, then code table + trie.

        Args:
            texts (`list[str]`) or embeddings (`(M, D)`): the new items' texts (embedded with the configured text
                encoder, as the hook embedded the catalogue) or their text embeddings.
            item_ids (`(M,)`, *optional*): existing items without a code to fill (cold-start protocol); by default
                the items are appended as ids ``n_items .. n_items + M - 1`` (``full_sort_predict`` then scores
                ``n_items + M`` columns).
            on_overflow: ``"error"`` (default) or ``"skip"`` for items whose tuple needs a code beyond the trained
                vocabulary (typically an extra-level code past the largest collision group seen in training).
        Returns:
            :class:`AddedItems`. Existing items keep their codes, so their scores (``predict``, beam scores) do not
            change; the beam may now return new items instead of some of them.
        """
        from recbole_genrec.preprocess.text_encoder import new_item_embeddings

        emb = new_item_embeddings(self.config, texts, embeddings, on_overflow)  # [M, D]
        codes = torch.as_tensor(self.new_item_codes(emb), dtype=torch.long)  # [M, L]
        sizes = torch.tensor(self.code_table.codebook_sizes)
        overflow = (codes >= sizes).any(dim=1)  # [M]
        if overflow.any() and on_overflow == "error":
            rows = overflow.nonzero().flatten()[:5].tolist()
            raise ValueError(
                f"{int(overflow.sum())} of {len(codes)} new items (rows {rows}, e.g. code {codes[rows[0]].tolist()}) "
                f"need codes beyond the trained codebook sizes {self.code_table.codebook_sizes} (their code "
                f"tuple is already used as often as the extra level allows); pass on_overflow='skip' to add them "
                f"without a semantic ID, or retrain with a larger extra level")
        codes = codes.masked_fill(overflow.unsqueeze(1), -1)
        ids = self.code_table.add_items(codes, item_ids)
        self.n_items = self.code_table.n_items
        if overflow.any():
            self.logger.warning(f"add_items: {int(overflow.sum())} of {len(codes)} items got no semantic ID "
                                f"(code beyond the trained vocabulary); they are never generated")
        return AddedItems(ids, codes, overflow)

    @torch.no_grad()
    def recommend(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, k: int, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        r"""Top-``k`` next items of every history (in eval mode, restoring the previous mode).

        Args:
            item_seq (`torch.LongTensor` of shape `(B, T)`), item_seq_len (`(B,)`): RecBole item sequences.
            k (`int`): number of items; the search uses ``max(k, beam_size)`` beams.
            user_ids (`torch.LongTensor` of shape `(B,)`, *optional*): needed when ``use_user_token``.
        Returns:
            `torch.LongTensor` of shape `(B, k)`: item ids, best first (0 pads when fewer items exist).
        """
        was_training = self.training
        self.eval()
        try:
            input_ids, attention_mask = self.encoder_inputs(item_seq, item_seq_len, user_ids)
            item_ids, _ = self.beam_search(input_ids, attention_mask, max(int(k), self.beam_size))
        finally:
            self.train(was_training)
        return item_ids[:, :k]
