# coding: utf-8
"""Tests for DiscRec (recbole_genrec/model/sequential_recommender/discrec.py) and its embedding layer
(recbole_genrec/generative/discrec_embedding.py).

Unit tests run on a hand-made code table; model tests on tests/data/tiny (40 items, 120 users) with residual
k-means semantic IDs, a one-layer T5 and a preprocessing cache under pytest's tmp_path.
"""

import itertools

import math

import pytest
import torch

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from conftest import (
    TINY_T5,
    assert_groups_encode_like_full_batch,
    discrec_branch,
    make_tiny_config,
    popularity_recall,
    prepare_tiny,
    recbole_argv,
    tiny_settings,
)
from recbole_genrec import run_recbole_genrec
from recbole_genrec.generative import PAD_TOKEN_ID, CodeTable
from recbole_genrec.generative.discrec_embedding import (
    BranchGate,
    DiscRecEmbedding,
    decoder_item_layout,
    encoder_item_layout,
)
from recbole_genrec.model.sequential_recommender.discrec import DiscRec, DiscRecBackbone
from recbole_genrec.run_builder import trainer_class

N_LEVELS, K = 3, 3
SIZES = dict(d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, dropout_rate=0.1,
             feed_forward_proj="relu")


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------- hand-made codes
@pytest.fixture(scope="module")
def code_table() -> CodeTable:
    """12 items (row 0 pad) with distinct 3-level codes over 3 codes per level; item 11 has no code."""
    tuples = list(itertools.product(range(K), repeat=N_LEVELS))[:11]
    codes = torch.tensor([[-1] * N_LEVELS] + [list(t) for t in tuples])
    codes[11] = -1
    return CodeTable(codes, [K] * N_LEVELS)


@pytest.fixture(scope="module")
def batch(code_table):
    """Histories of lengths 4, 2 (with an uncoded item) and 1 over 4 slots -> encoder inputs [3, 13]."""
    item_seq = torch.tensor([[1, 2, 3, 4], [5, 11, 0, 0], [6, 0, 0, 0]])
    item_seq_len = torch.tensor([4, 2, 1])
    return item_seq, item_seq_len, *code_table.history_tokens(item_seq, item_seq_len)


def make_backbone(code_table, seed=0, **branch):
    torch.manual_seed(seed)
    kwargs = discrec_branch(n_heads=2, d_ff=48, dropout=0.1, **branch)
    return DiscRecBackbone(code_table.vocab_size, code_table.n_levels, code_table.vocab_size, kwargs,
                           eos_attends_last_item=True, **SIZES)


def expected_groups(input_ids, n_levels):
    """Reference item slot of every code token (None for PAD / EOS) from the documented layout."""
    seq_len = input_ids.size(1)
    extra = (seq_len - 1) % n_levels
    return [[(p - extra) // n_levels if 2 <= int(t) and p < seq_len - 1 and p >= extra else None
             for p, t in enumerate(row)] for row in input_ids.tolist()]


def test_encoder_mask_keeps_tokens_inside_their_item(code_table, batch):
    _, _, input_ids, _ = batch
    levels, allowed = encoder_item_layout(input_ids, N_LEVELS, code_table.vocab_size, True)
    groups = expected_groups(input_ids, N_LEVELS)
    seq_len = input_ids.size(1)
    last_slot = (seq_len - 1) // N_LEVELS - 1
    for b, i, j in itertools.product(range(input_ids.size(0)), range(seq_len), range(seq_len)):
        gi, gj = groups[b][i], groups[b][j]
        if i == seq_len - 1:  # EOS: itself + the codes of the last slot (the true last item: left padding)
            expected = j == i or gj == last_slot
        elif gi is None:  # PAD: only itself
            expected = i == j
        else:  # a code: exactly the codes of its own item
            expected = gj == gi
        assert bool(allowed[b, i, j]) == expected, (b, i, j)
    # no query ever sees a PAD key but itself
    pad = input_ids == PAD_TOKEN_ID
    off_diag = allowed & ~torch.eye(seq_len, dtype=torch.bool)
    assert not (off_diag & pad.unsqueeze(1)).any()
    # levels: codes 1..L by position in the item, EOS L+1, PAD L+2
    assert levels[0, :-1].tolist() == [1, 2, 3] * 4 and levels[0, -1] == N_LEVELS + 1
    assert (levels[pad] == N_LEVELS + 2).all()
    # without the EOS link, EOS attends only to itself
    _, no_link = encoder_item_layout(input_ids, N_LEVELS, code_table.vocab_size, eos_attends_last_item=False)
    assert no_link[:, -1].sum(1).tolist() == [1, 1, 1]


def test_encoder_mask_with_a_user_token_column(code_table, batch):
    _, _, input_ids, _ = batch
    user = code_table.vocab_size + 5  # TIGER's user tokens sit above the code vocabulary
    with_user = torch.cat([torch.zeros_like(input_ids[:, :1]), input_ids], 1)  # [B, T*L+2]
    with_user[1, 6] = user  # the slot right before the first real token
    levels, allowed = encoder_item_layout(with_user, N_LEVELS, code_table.vocab_size, True)
    _, plain = encoder_item_layout(input_ids, N_LEVELS, code_table.vocab_size, True)
    assert levels[1, 6] == N_LEVELS + 3
    assert allowed[1, 6].sum() == 1 and allowed[1, :, 6].sum() == 1  # alone in both directions
    assert torch.equal(allowed[:, 1:, 1:] & ~torch.eye(input_ids.size(1), dtype=torch.bool),
                       plain & ~torch.eye(input_ids.size(1), dtype=torch.bool))


def test_other_items_cannot_change_a_tokens_collaborative_embedding(code_table, batch):
    item_seq, item_seq_len, input_ids, _ = batch
    backbone = make_backbone(code_table).eval()
    branch = backbone.encoder_branch

    def collaborative(seq):
        ids, _ = code_table.history_tokens(seq, item_seq_len)
        levels, allowed = backbone.encoder_layout(ids)
        return branch.collaborative(backbone.shared(ids), levels, allowed)  # [B, S, d]

    with torch.no_grad():
        base = collaborative(item_seq)
        changed_seq = item_seq.clone()
        changed_seq[0, 1] = 9  # replace the 2nd of 4 items of user 0 -> encoder slot 1
        changed = collaborative(changed_seq)
    slot = torch.arange(input_ids.size(1)) // N_LEVELS
    other_codes = (slot != 1) & (torch.arange(input_ids.size(1)) < input_ids.size(1) - 1)
    assert torch.allclose(base[0, other_codes], changed[0, other_codes], atol=1e-6)
    assert not torch.allclose(base[0, slot == 1], changed[0, slot == 1])
    assert torch.allclose(base[0, -1], changed[0, -1], atol=1e-6)  # EOS sees only the last item
    assert torch.allclose(base[1:], changed[1:], atol=1e-6)
    # ...while changing the last item does reach EOS
    last_seq = item_seq.clone()
    last_seq[0, 3] = 9
    with torch.no_grad():
        assert not torch.allclose(collaborative(last_seq)[0, -1], base[0, -1])
    # the same item has the same collaborative embedding wherever it sits in a history
    moved = torch.tensor([[4, 3, 2, 1], [5, 11, 0, 0], [6, 0, 0, 0]])
    with torch.no_grad():
        moved_out = collaborative(moved)
    assert torch.allclose(base[0, 0:3], moved_out[0, 9:12], atol=1e-5)


def test_decoder_branch_is_causal_and_matches_teacher_forcing(code_table):
    backbone = make_backbone(code_table).eval()
    targets = code_table.item_tokens(torch.tensor([1, 7, 10]))  # [3, L]
    full = backbone.shift_right(targets)  # [3, L] = [BOS, t_0, t_1]
    levels, allowed = decoder_item_layout(full, N_LEVELS)
    assert levels[0].tolist() == [0, 1, 2]
    assert torch.equal(allowed[0], torch.ones(3, 3, dtype=torch.bool).tril())
    with torch.no_grad():
        teacher = backbone.decoder_embeds(full)  # [3, L, d]
        for t in range(1, N_LEVELS + 1):  # incremental decoding sees growing prefixes
            assert torch.allclose(backbone.decoder_embeds(full[:, :t]), teacher[:, :t], atol=1e-6)
        perturbed = full.clone()
        perturbed[:, 2] = targets[[1, 2, 0], 1]  # change the last prefix token only
        assert torch.allclose(backbone.decoder_embeds(perturbed)[:, :2], teacher[:, :2], atol=1e-6)


@pytest.mark.parametrize("init", ["official", "small"])
def test_gate_weights_sum_to_one(code_table, batch, init):
    _, _, input_ids, _ = batch
    backbone = make_backbone(code_table, init=init).eval()
    levels, allowed = backbone.encoder_layout(input_ids)
    with torch.no_grad():
        mixed, weights = backbone.encoder_branch(backbone.shared(input_ids), levels, allowed)
    assert weights.shape == (*input_ids.shape, 2)
    assert torch.allclose(weights.sum(-1), torch.ones(input_ids.shape), atol=1e-6)
    assert ((weights >= 0) & (weights <= 1)).all()
    spread = (weights[..., 0] - 0.5).abs().mean().item()
    if init == "small":  # N(0, 0.02) gate vectors: the gate starts at about 0.5 / 0.5
        assert ((weights > 0) & (weights < 1)).all() and spread < 0.1
    else:  # official N(0, 1) gate vectors: far from 0.5 / 0.5 for most tokens
        assert spread > 0.25
    gate = BranchGate(8, "official")
    a, b = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mix, w = gate(a, b)
    assert torch.allclose(mix, w[..., :1] * a + w[..., 1:] * b, atol=1e-6)


@pytest.mark.parametrize("switch", ["use_level_embedding", "use_collab_branch", "use_gate"])
def test_each_ablation_changes_the_embedding(code_table, batch, switch):
    _, _, input_ids, _ = batch
    full = make_backbone(code_table).eval()
    ablated = make_backbone(code_table, **{switch: False}).eval()
    missing, unexpected = ablated.load_state_dict(full.state_dict(), strict=False)
    assert not missing and unexpected  # same weights, minus the ablated module
    decoder_ids = full.shift_right(code_table.item_tokens(torch.tensor([1, 2, 3])))
    with torch.no_grad():
        for hook, ids in ((lambda m, x: m.encoder_embeds(x), input_ids), (lambda m, x: m.decoder_embeds(x),
                                                                          decoder_ids)):
            assert not torch.allclose(hook(full, ids), hook(ablated, ids), atol=1e-4)
        tokens = full.shared(input_ids)
        if switch == "use_collab_branch":  # the plain TIGER input
            assert torch.equal(ablated.encoder_embeds(input_ids), tokens)
        if switch == "use_gate":  # the plain sum of the two branches
            levels, allowed = full.encoder_layout(input_ids)
            collab = full.encoder_branch.collaborative(tokens, levels, allowed)
            assert torch.allclose(ablated.encoder_embeds(input_ids), tokens + collab, atol=1e-6)


def test_yaml_values_match_the_official_initialisation_statistics():
    """official layers/DiscRec.py: code_embedding and gated_w are nn.Embedding (N(0, 1)); MultiHeadAttention and
    FeedForward initialise their weights Xavier-normal with zero biases; DiscRecAttention has no output projection."""
    torch.manual_seed(0)
    d_model, d_ff = 128, 1024
    official = DiscRecEmbedding(d_model, 4, **discrec_branch(n_heads=2, d_ff=d_ff))  # DiscRec.yaml's form
    level = official.level_embedding.weight
    assert level.shape == (4 + 4, d_model)
    assert abs(level.std().item() - 1.0) < 0.05 and abs(level.mean().item()) < 0.05
    assert abs(official.gate.weight.std().item() - 1.0) < 0.1
    attention = official.collab_branch.attention
    assert attention.out is None
    xavier_dd = math.sqrt(2.0 / (2 * d_model))
    for block in attention.qkv.weight.detach().chunk(3, dim=0):  # q_proj, k_proj, v_proj: [d, d] each
        assert abs(block.std().item() - xavier_dd) < 0.05 * xavier_dd and abs(block.mean().item()) < 0.01
    assert torch.equal(attention.qkv.bias, torch.zeros_like(attention.qkv.bias))
    ffn_in, ffn_out = official.collab_branch.ffn[0], official.collab_branch.ffn[3]
    xavier_ff = math.sqrt(2.0 / (d_model + d_ff))
    for layer in (ffn_in, ffn_out):
        assert abs(layer.weight.std().item() - xavier_ff) < 0.05 * xavier_ff
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    assert official.collab_branch.ffn_norm_placement == "post"
    assert official.collab_branch.attn_norm.eps == 1e-8

    small = DiscRecEmbedding(d_model, 4, **discrec_branch(n_heads=2, d_ff=d_ff, init="small", attn_out_proj=True,
                                                       ffn_norm="pre"))
    assert abs(small.level_embedding.weight.std().item() - 0.02) < 0.002
    assert abs(small.gate.weight.std().item() - 0.02) < 0.004
    assert small.collab_branch.attention.out is not None and small.collab_branch.ffn_norm_placement == "pre"
    with pytest.raises(ValueError, match="ffn_norm must be one of"):
        DiscRecEmbedding(d_model, 4, **discrec_branch(ffn_norm="middle"))


@pytest.mark.parametrize("ffn_norm", ["post", "pre"])
def test_collaborative_block_follows_its_norm_placement(ffn_norm):
    torch.manual_seed(0)
    branch = DiscRecEmbedding(16, 3, **discrec_branch(n_heads=2, d_ff=24, dropout=0.0, ffn_norm=ffn_norm)).collab_branch.eval()
    x = torch.randn(2, 7, 16)
    allowed = torch.eye(7, dtype=torch.bool).expand(2, 7, 7)  # every token attends to itself only
    h = branch.attn_norm(x)
    value = torch.nn.functional.linear(h, *(t.chunk(3, 0)[2] for t in (branch.attention.qkv.weight,
                                                                       branch.attention.qkv.bias)))
    a = h + value  # attention over one key returns its value; no output projection (official)
    expected = (branch.ffn_norm(a) + branch.ffn(branch.ffn_norm(a)) if ffn_norm == "post"
                else a + branch.ffn(branch.ffn_norm(a)))
    with torch.no_grad():
        assert torch.allclose(branch(x, allowed), expected, atol=1e-5)


def test_branch_modules_follow_the_switches():
    assert DiscRecEmbedding(16, 3, **discrec_branch(use_collab_branch=False)).collab_branch is None
    assert DiscRecEmbedding(16, 3, **discrec_branch(use_gate=False)).gate is None
    assert DiscRecEmbedding(16, 3, **discrec_branch(use_level_embedding=False)).level_embedding is None
    branch = DiscRecEmbedding(16, 3, **discrec_branch(n_heads=2, d_ff=40)).collab_branch
    assert branch.ffn[0].out_features == 40 and branch.attention.n_heads == 2


# ------------------------------------------------------------------------------------------------- tiny data
# a small, fast DiscRec
DISCREC_SETTINGS = {
    **TINY_T5, "sid_method": "rkmeans", "sid_levels": 2, "sid_codebook_size": 4, "MAX_ITEM_LIST_LENGTH": 5,
    "discrec_d_ff": 32, "beam_size": 10, "topk": [5, 10], "valid_metric": "NDCG@10", "eval_batch_size": 64,
    "learning_rate": 0.005, "warmup_steps": 0, "lr_scheduler": "constant", "epochs": 2, "eval_step": 1,
}


def make_config(cache_dir, **overrides):
    return make_tiny_config("DiscRec", cache_dir, DISCREC_SETTINGS, **overrides)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("discrec_cache")
    return dict(prepare_tiny(make_config(cache)), cache=cache)


def build_model(tiny, **overrides):
    config = make_config(tiny["cache"], **overrides) if overrides else tiny["config"]
    init_seed(0, True)
    return DiscRec(config, tiny["train"].dataset), config


def test_config_switches_reach_the_backbone(tiny):
    model, _ = build_model(tiny, discrec_gate=False, discrec_level_embedding=False)
    assert isinstance(model.backbone, DiscRecBackbone)
    for branch in (model.backbone.encoder_branch, model.backbone.decoder_branch):
        assert branch.gate is None and branch.level_embedding is None and branch.collab_branch is not None
    plain, _ = build_model(tiny, discrec_collab_branch=False)
    assert plain.backbone.encoder_branch.collab_branch is None


@pytest.mark.slow
def test_loss_decreases_and_decoding_is_exact(tiny):
    model, config = build_model(tiny)
    trainer = trainer_class(config)(config, model)
    losses = [trainer._train_epoch(tiny["train"], epoch) for epoch in range(4)]
    assert losses[-1] < losses[0] * 0.9, losses

    model.eval()
    interaction = next(iter(tiny["test"]))[0]
    seq, seq_len = interaction[model.ITEM_SEQ][:12], interaction[model.ITEM_SEQ_LEN][:12]
    input_ids, attention_mask = model.encoder_inputs(seq, seq_len)
    with torch.no_grad():
        items, scores = model.beam_search(input_ids, attention_mask)  # [B, beam] x2
        real = set(model.code_table.item_of_leaf.tolist())
        for row in items.tolist():
            assert len(set(row)) == len(row) and set(row) <= real
        assert (scores[:, :-1] >= scores[:, 1:]).all()
        beam = items.size(1)
        check = Interaction({model.ITEM_SEQ: seq.repeat_interleave(beam, 0),
                             model.ITEM_SEQ_LEN: seq_len.repeat_interleave(beam, 0),
                             model.ITEM_ID: items.reshape(-1)})
        teacher = model.predict(check).reshape(items.shape)
        assert torch.allclose(teacher, scores, atol=1e-4)
        full = model.full_sort_predict(Interaction({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: seq_len}))
        assert torch.equal(full.topk(beam).indices.sort(1).values, items.sort(1).values)


@pytest.mark.slow
def test_run_recbole_genrec_trains_discrec_that_beats_baselines(tiny):
    config_dict = tiny_settings(tiny["cache"], DISCREC_SETTINGS, epochs=4, eval_step=4, stopping_step=10)
    with recbole_argv():
        result = run_recbole_genrec(model="DiscRec", dataset="tiny", config_dict=config_dict, saved=False)
    assert result["model"] == "DiscRec" and result["epochs"] == 4 and result["train_seconds_per_epoch"] > 0
    recall = result["test_result"]["recall@5"]
    random_recall = 5 / (tiny["train"].dataset.item_num - 1)
    pop_recall = popularity_recall(tiny, 5)
    assert recall > max(random_recall, pop_recall) + 0.15, (recall, pop_recall, random_recall)
    assert result["test_result"]["recall@10"] >= recall


def test_rqvae_codes_and_user_token(tiny):
    config = make_config(tiny["cache"], sid_method="rqvae", sid_params={"epochs": 20, "batch_size": 64},
                         use_user_token=True, user_token_buckets=8)
    data = prepare_tiny(config)
    train_data, test_data = data["train"], data["test"]
    init_seed(0, True)
    model = DiscRec(config, train_data.dataset)
    loss = model.calculate_loss(next(iter(train_data)))
    assert torch.isfinite(loss)
    loss.backward()
    interaction = next(iter(test_data))[0][:6]
    users = interaction[model.USER_ID]
    input_ids, _ = model.encoder_inputs(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], users)
    levels, allowed = model.backbone.encoder_layout(input_ids)
    is_user = input_ids >= model.code_table.vocab_size  # one hashed user token per history
    assert torch.equal(is_user.sum(1), torch.ones(6, dtype=torch.long))
    assert (levels[is_user] == model.code_table.n_levels + 3).all()
    assert (allowed.sum(2)[is_user] == 1).all() and (allowed.sum(1)[is_user] == 1).all()
    model.eval()
    with torch.no_grad():
        full = model.full_sort_predict(interaction)
    assert (torch.isfinite(full).sum(1) == model.beam_size).all()


@pytest.mark.parametrize("user_token", [False, True])
def test_length_grouped_encoding_equals_full_encoding(code_table, batch, user_token):
    """length_groups + encode_groups (users grouped by history length, leading padding trimmed in whole items) give the
    same encoder states on every real position as encoding the padded batch, with and without TIGER's user-token column."""
    _, _, input_ids, mask = batch
    if user_token:  # TIGER's layout: one more leading column, the user token right before the first real token
        pad = input_ids.new_full((input_ids.size(0), 1), PAD_TOKEN_ID)
        input_ids = torch.cat([pad, input_ids], dim=1)
        user_pos = (input_ids.size(1) - 1 - mask.sum(dim=1)).unsqueeze(1)
        input_ids = input_ids.scatter(1, user_pos, torch.full_like(user_pos, code_table.vocab_size))  # 1st user token
        mask = (input_ids != PAD_TOKEN_ID).long()
    torch.manual_seed(7)
    model = DiscRecBackbone(code_table.vocab_size + 4, code_table.n_levels, code_table.vocab_size,  # + 4 user tokens
                            discrec_branch(n_heads=2, d_ff=48, dropout=0.1), eos_attends_last_item=True,
                            **SIZES).eval()
    assert_groups_encode_like_full_batch(model, input_ids, mask, n_groups=3)  # one user per group
