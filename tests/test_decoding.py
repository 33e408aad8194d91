# coding: utf-8
"""Tests of the shared generative machinery: CodeTable, trie-constrained beam search and T5Backbone."""

import io
import itertools
import os
import sys

import pytest
import torch

try:
    import recbole_genrec.generative  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conftest import assert_groups_encode_like_full_batch  # noqa: E402
from recbole_genrec.generative import (  # noqa: E402
    EOS_TOKEN_ID,
    PAD_TOKEN_ID,
    CodeTable,
    T5Backbone,
    constrained_beam_search,
    scores_to_full,
)

N_ITEMS, N_LEVELS, K = 50, 3, 4
NO_CODE_ITEM = 7  # an item without a semantic ID: must never be generated


def make_codes(seed: int = 0) -> torch.Tensor:
    """[50, 3] codes: 48 distinct tuples drawn from 4^3 = 64 (many shared prefixes), row 0 pad, one item uncoded."""
    gen = torch.Generator().manual_seed(seed)
    tuples = list(itertools.product(range(K), repeat=N_LEVELS))
    perm = torch.randperm(len(tuples), generator=gen)[: N_ITEMS - 1].tolist()
    codes = torch.tensor([[-1] * N_LEVELS] + [list(tuples[i]) for i in perm])
    codes[NO_CODE_ITEM] = -1
    return codes


def tiny_backbone(vocab_size: int, seed: int = 0, **kwargs) -> T5Backbone:
    torch.manual_seed(seed)
    sizes = dict(d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16, dropout_rate=0.1,
                 feed_forward_proj="relu")
    sizes.update(kwargs)
    return T5Backbone(vocab_size, **sizes)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def code_table() -> CodeTable:
    return CodeTable(make_codes(), [K] * N_LEVELS)


@pytest.fixture(scope="module")
def batch(code_table):
    gen = torch.Generator().manual_seed(1)
    item_seq = torch.randint(1, N_ITEMS, (4, 6), generator=gen)
    item_seq_len = torch.tensor([6, 3, 1, 4])
    item_seq[torch.arange(6).unsqueeze(0) >= item_seq_len.unsqueeze(1)] = 0  # RecBole right padding
    return code_table.history_tokens(item_seq, item_seq_len)


def exhaustive_scores(model, code_table, input_ids, attention_mask):
    """float32 [B, n_items] sequence log-probability of every real item (-inf for pad / uncoded items)."""
    items = code_table.item_of_leaf  # [n_real]
    batch_size, n_real = input_ids.size(0), items.numel()
    targets = code_table.item_tokens(items).repeat(batch_size, 1)  # [B*n_real, L]
    with torch.no_grad():
        log_probs = model.sequence_log_prob(
            input_ids.repeat_interleave(n_real, 0), attention_mask.repeat_interleave(n_real, 0), targets
        ).reshape(batch_size, n_real)
    full = torch.full((batch_size, code_table.n_items), float("-inf"))
    full[:, items] = log_probs
    return full


# ---------------------------------------------------------------------------------------------------- CodeTable
def test_vocabulary_and_item_tokens(code_table):
    assert code_table.n_levels == N_LEVELS
    assert code_table.vocab_size == 2 + N_LEVELS * K
    assert code_table.level_offsets == [2, 2 + K, 2 + 2 * K]
    assert code_table.n_real_items == N_ITEMS - 2
    tokens = code_table.item_tokens(torch.tensor([[0, 3], [NO_CODE_ITEM, 5]]))  # [2, 2, L]
    assert tokens.shape == (2, 2, N_LEVELS)
    assert (tokens[0, 0] == PAD_TOKEN_ID).all() and (tokens[1, 0] == PAD_TOKEN_ID).all()
    assert tokens[0, 1].tolist() == (code_table.codes[3] + code_table.offsets).tolist()


def test_lookup_round_trip(code_table):
    items = torch.arange(N_ITEMS)
    looked_up = code_table.lookup(code_table.item_tokens(items))
    expected = items.clone()
    expected[NO_CODE_ITEM] = 0
    assert looked_up.tolist() == expected.tolist()
    # every tuple that is not an item -> 0, including out-of-level tokens and the uncoded item's old tuple
    all_tuples = torch.tensor(list(itertools.product(range(K), repeat=N_LEVELS))) + code_table.offsets
    hits = code_table.lookup(all_tuples)
    assert (hits > 0).sum().item() == code_table.n_real_items
    assert sorted(hits[hits > 0].tolist()) == sorted(code_table.item_of_leaf.tolist())
    wrong_level = code_table.item_tokens(torch.tensor([3]))[:, [1, 0, 2]]
    assert code_table.lookup(torch.tensor([[EOS_TOKEN_ID] * N_LEVELS])).item() == 0
    assert code_table.lookup(wrong_level).item() == 0  # tokens of the wrong levels


def test_state_dict_round_trip(code_table):
    buffer = io.BytesIO()
    torch.save(code_table.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert "codes" in state and "prefix_keys_0" in state and "item_of_leaf" in state
    # load into a table built from other (smaller, two-level) codes: buffers and metadata are replaced
    other = CodeTable(torch.tensor([[-1, -1], [0, 1], [1, 0]]), [2, 2])
    other.load_state_dict(state)
    assert other.n_levels == N_LEVELS and other.vocab_size == code_table.vocab_size
    assert other.codebook_sizes == code_table.codebook_sizes
    for name, value in code_table.state_dict().items():
        assert torch.equal(other.state_dict()[name], value), name
    tokens = code_table.item_tokens(torch.arange(N_ITEMS))
    assert torch.equal(other.lookup(tokens), code_table.lookup(tokens))


def test_trie_tables_match_python_trie(code_table):
    codes = code_table.codes[code_table.item_of_leaf]  # [n_real, L]
    prefix_ids = torch.zeros(1, dtype=torch.long)
    for level in range(N_LEVELS):
        # every distinct length-`level` prefix, in prefix-id order, plus a dead prefix (-1)
        prefixes = sorted({tuple(row[:level]) for row in codes.tolist()})
        ids = torch.arange(len(prefixes)) if level else prefix_ids
        longer = sorted({tuple(row[: level + 1]) for row in codes.tolist()})  # prefix id = rank in this order
        child_ids, child, valid = code_table.child_codes(level, torch.cat([ids, torch.tensor([-1])]))  # [N+1, C] x3
        assert valid.shape == (len(prefixes) + 1, code_table.max_children[level]) and not valid[-1].any()
        for row, prefix in enumerate(prefixes):
            expected = sorted({row_codes[level] for row_codes in codes.tolist() if tuple(row_codes[:level]) == prefix})
            assert child[row][valid[row]].tolist() == expected
            assert child_ids[row][valid[row]].tolist() == [longer.index(prefix + (c,)) for c in expected]
        assert (child_ids[~valid] == -1).all() and (child[~valid] == -1).all()
        assert code_table.max_children[level] == max(int(valid[row].sum()) for row in range(len(prefixes)))


def test_code_table_is_a_submodule(code_table):
    holder = torch.nn.Module()
    holder.code_table = CodeTable(make_codes(), [K] * N_LEVELS)
    holder.to(torch.float64)  # buffers are integer: untouched, module traversal must work
    assert holder.code_table.codes.dtype == torch.long
    assert set(code_table.state_dict()) <= {k.split(".", 1)[1] for k in holder.state_dict()}


def test_duplicate_codes_rejected():
    with pytest.raises(ValueError):
        CodeTable(torch.tensor([[-1, -1], [0, 1], [0, 1]]), [2, 2])


def test_history_tokens_layout(code_table):
    item_seq = torch.tensor([[3, 5, 9], [4, 0, 0], [0, 0, 0]])
    item_seq_len = torch.tensor([3, 1, 0])
    input_ids, attention_mask = code_table.history_tokens(item_seq, item_seq_len)
    tok = lambda i: code_table.item_tokens(torch.tensor(i)).tolist()  # noqa: E731
    pad = [PAD_TOKEN_ID] * N_LEVELS
    assert input_ids.shape == (3, 3 * N_LEVELS + 1)
    assert input_ids[0].tolist() == tok(3) + tok(5) + tok(9) + [EOS_TOKEN_ID]
    assert input_ids[1].tolist() == pad + pad + tok(4) + [EOS_TOKEN_ID]
    assert input_ids[2].tolist() == pad * 3 + [EOS_TOKEN_ID]
    assert attention_mask.tolist() == [
        [1] * 10,
        [0] * 6 + [1] * 4,
        [0] * 9 + [1],
    ]


# ---------------------------------------------------------------------------------------------------- beam search
def test_beam_search_returns_valid_unique_items(code_table, batch):
    model = tiny_backbone(code_table.vocab_size).eval()
    input_ids, attention_mask = batch
    items, scores = model.beam_search(input_ids, attention_mask, code_table, beam_size=10)
    assert items.shape == scores.shape == (4, 10) and scores.dtype == torch.float32
    assert (items > 0).all() and (items != NO_CODE_ITEM).all()
    for row in items.tolist():
        assert len(set(row)) == len(row)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert torch.equal(code_table.lookup(code_table.item_tokens(items)), items)


def test_full_beam_equals_exhaustive_ranking(code_table, batch):
    model = tiny_backbone(code_table.vocab_size, seed=3).eval()
    input_ids, attention_mask = batch
    beam = 60  # > 48 real items: the search is exhaustive, the tail is padding
    items, scores = model.beam_search(input_ids, attention_mask, code_table, beam_size=beam)
    n_real = code_table.n_real_items
    assert (items[:, n_real:] == 0).all() and torch.isinf(scores[:, n_real:]).all()
    full = exhaustive_scores(model, code_table, input_ids, attention_mask)  # [B, n_items]
    ref_scores, ref_items = full.sort(dim=1, descending=True)
    assert torch.equal(items[:, :n_real], ref_items[:, :n_real])
    torch.testing.assert_close(scores[:, :n_real], ref_scores[:, :n_real], atol=1e-4, rtol=0)
    dense = scores_to_full(items, scores, code_table.n_items)
    torch.testing.assert_close(dense, full, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def scored_model(code_table, batch):
    model = tiny_backbone(code_table.vocab_size, seed=5).eval()
    return model, exhaustive_scores(model, code_table, *batch)


@pytest.mark.parametrize("beam", [1, 5, 20])
def test_small_beam_scores_equal_sequence_log_prob(code_table, batch, scored_model, beam):
    model, full = scored_model
    input_ids, attention_mask = batch
    items, scores = model.beam_search(input_ids, attention_mask, code_table, beam_size=beam)
    torch.testing.assert_close(scores, full.gather(1, items), atol=1e-4, rtol=0)
    # beam search never returns something better than the true optimum
    assert (scores[:, 0] <= full.max(dim=1).values + 1e-4).all()


def test_few_items_are_padded():
    codes = torch.tensor([[-1, -1], [0, 0], [0, 1], [2, 1]])
    table = CodeTable(codes, [3, 2])
    model = tiny_backbone(table.vocab_size).eval()
    input_ids, attention_mask = table.history_tokens(torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]))
    items, scores = model.beam_search(input_ids, attention_mask, table, beam_size=6)
    assert sorted(items[:, :3].flatten().tolist()) == [1, 1, 2, 2, 3, 3]
    assert (items[:, 3:] == 0).all() and torch.isneginf(scores[:, 3:]).all()


class PrefixDependentBackbone(T5Backbone):
    """DiscRec-like hook: the decoder embedding of a position depends on all earlier codes of the target item."""

    def decoder_embeds(self, decoder_input_ids):
        embeds = self.shared(decoder_input_ids)  # [B, t, d]
        return embeds + 0.5 * torch.cumsum(embeds, dim=1)  # [B, t, d]: position j sees positions <= j


def test_decoder_hook_sees_full_prefix(code_table, batch):
    torch.manual_seed(11)
    model = PrefixDependentBackbone(
        code_table.vocab_size, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16,
        dropout_rate=0.1, feed_forward_proj="relu"
    ).eval()
    input_ids, attention_mask = batch
    items, scores = model.beam_search(input_ids, attention_mask, code_table, beam_size=60)
    full = exhaustive_scores(model, code_table, input_ids, attention_mask)
    n_real = code_table.n_real_items
    ref_scores, ref_items = full.sort(dim=1, descending=True)
    assert torch.equal(items[:, :n_real], ref_items[:, :n_real])
    torch.testing.assert_close(scores[:, :n_real], ref_scores[:, :n_real], atol=1e-4, rtol=0)


def test_functional_search_with_static_scores(code_table):
    """constrained_beam_search with a context-free step_fn: must find the exact top items of an additive score."""
    gen = torch.Generator().manual_seed(2)
    level_scores = torch.log_softmax(torch.randn(2, code_table.vocab_size, generator=gen), -1)  # [B, V]
    beam = 8

    def step_fn(last_tokens, step):
        return level_scores.repeat_interleave(beam, 0)  # [B*beam, V]

    items, scores = constrained_beam_search(step_fn, code_table, 2, beam, device="cpu")
    tokens = code_table.item_tokens(code_table.item_of_leaf)  # [n_real, L]
    totals = level_scores[:, tokens].sum(-1)  # [B, n_real]
    ref_scores, ref_idx = totals.topk(beam, dim=1)
    assert torch.equal(items, code_table.item_of_leaf[ref_idx])
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=0)


def test_beam_search_under_autocast(code_table, batch):
    model = tiny_backbone(code_table.vocab_size).eval()
    input_ids, attention_mask = batch
    with torch.autocast("cpu", dtype=torch.bfloat16):
        items, scores = model.beam_search(input_ids, attention_mask, code_table, beam_size=10)
    assert scores.dtype == torch.float32 and (items > 0).all()
    for row in items.tolist():
        assert len(set(row)) == len(row)


# ---------------------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_training_reduces_loss(code_table):
    """Synthetic next-item task (next item = last item + 1 among coded items): the token loss must drop."""
    torch.manual_seed(0)
    real = code_table.item_of_leaf.sort().values  # [n_real]
    model = tiny_backbone(code_table.vocab_size, dropout_rate=0.0).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        start = torch.randint(0, real.numel() - 4, (32,))
        positions = start.unsqueeze(1) + torch.arange(4)  # [32, 4]
        item_seq, target = real[positions[:, :3]], real[positions[:, 3]]
        input_ids, attention_mask = code_table.history_tokens(item_seq, torch.full((32,), 3))
        loss, logits, enc, dec = model.forward_loss(input_ids, attention_mask, code_table.item_tokens(target))
        assert logits.shape == (32, N_LEVELS, code_table.vocab_size)
        assert enc.shape == (32, input_ids.size(1), 32) and dec.shape == (32, N_LEVELS, 32)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def leading_padding_groups(encoder_hidden, attention_mask, sizes):
    """Splits users into contiguous groups of ``sizes`` and drops each group's shared leading padding columns."""
    hidden_groups, mask_groups, begin = [], [], 0
    for size in sizes:
        mask = attention_mask[begin : begin + size]
        start = int(mask.float().argmax(dim=1).min())  # first real column of the group
        hidden_groups.append(encoder_hidden[begin : begin + size, start:])
        mask_groups.append(mask[:, start:])
        begin += size
    return hidden_groups, mask_groups


@pytest.mark.parametrize("ff,grouped", [("relu", False), ("gated-gelu", False), ("relu", True)])
def test_incremental_decoder_matches_hugging_face_cache(code_table, batch, ff, grouped):
    """IncrementalT5Decoder (per-user cross K/V, beams folded into the query; optionally users in groups without their
    shared leading padding) == HF decoder with its KV cache on the full padded batch."""
    from recbole_genrec.generative.hf_compat import new_encoder_decoder_cache
    from recbole_genrec.generative.incremental import IncrementalT5Decoder

    input_ids, attention_mask = batch  # the batch has padded histories
    model = tiny_backbone(code_table.vocab_size, seed=3, feed_forward_proj=ff).eval()
    beam, n_users = 3, input_ids.size(0)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        encoder_hidden = model.encode(input_ids, attention_mask)  # [B, S, d]
        if grouped:  # histories of 6 and 3 items, then 1 and 4: both groups lose leading columns
            hidden_groups, mask_groups = leading_padding_groups(encoder_hidden, attention_mask, [2, 2])
            assert [g.size(1) for g in hidden_groups] == [19, 13]
            ours = IncrementalT5Decoder(model.t5.decoder, hidden_groups, mask_groups, beam, max_length=4)
        else:
            ours = IncrementalT5Decoder(model.t5.decoder, encoder_hidden, attention_mask, beam)
        cache = new_encoder_decoder_cache(model.t5.decoder)
        tokens = torch.randint(1, code_table.vocab_size, (n_users, 1), generator=gen)  # [B, 1]
        hf_rows = model.decode(model.shared(tokens), encoder_hidden, attention_mask, cache=cache)[:, -1]
        torch.testing.assert_close(ours.step(model.shared(tokens[:, 0])), hf_rows, rtol=1e-5, atol=1e-5)
        cache.batch_repeat_interleave(beam)
        enc_rows = encoder_hidden.repeat_interleave(beam, 0)
        mask_rows = attention_mask.repeat_interleave(beam, 0)
        for _ in range(3):  # later steps on B * beam rows, with a reorder that stays within each user
            order = torch.cat([torch.randint(0, beam, (beam,), generator=gen) + u * beam for u in range(n_users)])
            ours.reorder(order)
            cache.self_attention_cache.reorder_cache(order)
            tokens = torch.randint(1, code_table.vocab_size, (n_users * beam, 1), generator=gen)
            hf_rows = model.decode(model.shared(tokens), enc_rows, mask_rows, cache=cache)[:, -1]
            torch.testing.assert_close(ours.step(model.shared(tokens[:, 0])), hf_rows, rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("n_groups", [2, 4])
def test_length_grouped_encoding_equals_full_encoding(code_table, batch, n_groups):
    """T5Backbone.length_groups + encode_groups (what beam_search encodes) == encode on every real position of a
    padded batch."""
    input_ids, attention_mask = batch  # histories of 6, 3, 1 and 4 items
    model = tiny_backbone(code_table.vocab_size, seed=6).eval()
    assert_groups_encode_like_full_batch(model, input_ids, attention_mask, n_groups)


def test_grouped_beam_search_equals_one_user_at_a_time(code_table):
    """A batch large enough to be split into length groups (users sorted, searched, unsorted) returns, for every
    user, what searching that user alone returns."""
    gen = torch.Generator().manual_seed(11)
    n_users = 24
    item_seq = torch.randint(1, N_ITEMS, (n_users, 6), generator=gen)
    item_seq_len = torch.randint(1, 7, (n_users,), generator=gen)
    item_seq[torch.arange(6).unsqueeze(0) >= item_seq_len.unsqueeze(1)] = 0
    input_ids, attention_mask = code_table.history_tokens(item_seq, item_seq_len)
    model = tiny_backbone(code_table.vocab_size, seed=9).eval()
    order, groups = model.length_groups(attention_mask)
    assert len(groups) == 3 and sorted(order.tolist()) == list(range(n_users))
    assert len({start for _, _, start in groups}) > 1  # groups really drop different numbers of columns
    items, scores = model.beam_search(input_ids, attention_mask, code_table, beam_size=5)  # [24, 5] x2
    for user in range(n_users):
        alone_items, alone_scores = model.beam_search(
            input_ids[user : user + 1], attention_mask[user : user + 1], code_table, beam_size=5
        )
        assert items[user].tolist() == alone_items[0].tolist()
        torch.testing.assert_close(scores[user], alone_scores[0], rtol=1e-5, atol=1e-5)


def test_beam_search_returns_its_buffers_to_the_pool(code_table, batch):
    """Every search gives its large CPU buffers back (also when the search fails), so repeated searches reuse them
    instead of growing the pool."""
    from recbole_genrec.generative.workspace import DEFAULT_POOL

    input_ids, attention_mask = batch
    model = tiny_backbone(code_table.vocab_size, seed=12).eval()
    DEFAULT_POOL.clear()
    first = model.beam_search(input_ids, attention_mask, code_table, beam_size=5)
    pooled = DEFAULT_POOL.free_bytes
    assert pooled > 0
    second = model.beam_search(input_ids, attention_mask, code_table, beam_size=5)
    assert DEFAULT_POOL.free_bytes == pooled  # the same buffers went out and came back
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])  # reused buffers change nothing
    with pytest.raises(ValueError):  # a beam size the search rejects, after the decoder took its buffers
        model.beam_search(input_ids, attention_mask, code_table, beam_size=0)
    assert DEFAULT_POOL.free_bytes == pooled
