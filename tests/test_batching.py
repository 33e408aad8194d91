# coding: utf-8
"""Training throughput machinery of the generative models: length-bucketed batches, trimmed padding and the lean T5
forward (recbole_genrec/generative/batching.py, recbole_genrec/generative/lean_t5.py).

The exactness claims are checked on random weights: trimming the common left padding of a batch leaves the loss and
every gradient unchanged (to 1e-5), and the lean forward equals Hugging Face's T5Stack with dropout off."""

import numpy as np
import pytest
import torch

from conftest import discrec_branch
from recbole_genrec.generative import EOS_TOKEN_ID, PAD_TOKEN_ID, T5Backbone
from recbole_genrec.generative.batching import LengthBuckets, trim_left_padding
from recbole_genrec.generative.lean_t5 import effective_keep, fast_dropout, keep_mask, t5_stack_forward
from recbole_genrec.model.sequential_recommender.discrec import DiscRecBackbone

pytestmark = pytest.mark.usefixtures("one_thread")

N_LEVELS, CODE_VOCAB = 3, 2 + 3 * 8


def small_backbone(cls=T5Backbone, dropout=0.0, **kwargs):
    torch.manual_seed(0)
    sizes = dict(d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16, dropout_rate=dropout,
                 feed_forward_proj=kwargs.pop("feed_forward_proj", "relu"))
    if cls is DiscRecBackbone:
        kwargs = dict(n_levels=N_LEVELS, code_vocab_size=CODE_VOCAB, branch_kwargs=discrec_branch(d_ff=64, dropout=dropout),
                      eos_attends_last_item=True, **kwargs)
    return cls(CODE_VOCAB + 5, **sizes, **kwargs)


def history_batch(lengths, max_items, user_token=False, seed=0):
    """Left-padded encoder inputs as ``CodeTable.history_tokens`` lays them out: `(B, max_items * L + 1 [+1])`."""
    gen = torch.Generator().manual_seed(seed)
    width = max_items * N_LEVELS + 1 + int(user_token)
    ids = torch.full((len(lengths), width), PAD_TOKEN_ID, dtype=torch.long)
    for row, n in enumerate(lengths):
        codes = torch.stack([2 + 8 * level + torch.randint(0, 8, (n,), generator=gen) for level in range(N_LEVELS)], 1)
        ids[row, width - 1 - n * N_LEVELS : width - 1] = codes.reshape(-1)
        ids[row, -1] = EOS_TOKEN_ID
        if user_token:
            ids[row, width - 2 - n * N_LEVELS] = CODE_VOCAB + row % 5  # hashed user token before the history
    targets = torch.stack([2 + 8 * level + torch.randint(0, 8, (len(lengths),), generator=gen)
                           for level in range(N_LEVELS)], 1)
    return ids, (ids != PAD_TOKEN_ID).long(), targets


def loss_and_grads(model, ids, mask, targets):
    model.zero_grad()
    loss = model.forward_loss(ids, mask, targets)[0]
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# --------------------------------------------------------------------------------------------- trimming
def test_trim_left_padding_drops_only_common_padding_in_multiples():
    ids, mask, _ = history_batch([2, 4, 3], max_items=6)
    trimmed_ids, trimmed_mask = trim_left_padding(ids, mask)
    assert trimmed_ids.shape == (3, 4 * N_LEVELS + 1)  # longest history 4 items + EOS
    assert torch.equal(trimmed_ids, ids[:, -trimmed_ids.size(1):]) and bool(trimmed_mask[:, 0].any())
    ids_u, mask_u, _ = history_batch([2, 4, 3], max_items=6, user_token=True)
    kept_ids, _ = trim_left_padding(ids_u, mask_u, multiple=N_LEVELS)
    assert (ids_u.size(1) - kept_ids.size(1)) % N_LEVELS == 0  # DiscRec's item grid stays aligned to EOS
    assert kept_ids.size(1) == 4 * N_LEVELS + 2  # history + user token + EOS
    empty = torch.zeros(2, 7, dtype=torch.long)
    assert trim_left_padding(empty, empty)[0].size(1) == 1  # at least one column survives


@pytest.mark.parametrize("cls,user_token", [(T5Backbone, False), (T5Backbone, True), (DiscRecBackbone, True)])
def test_trimmed_and_padded_batches_give_the_same_loss_and_gradients(cls, user_token):
    model = small_backbone(cls)
    ids, mask, targets = history_batch([1, 3, 2, 5], max_items=9, user_token=user_token)
    multiple = getattr(model, "trim_multiple", 1)
    trimmed_ids, trimmed_mask = trim_left_padding(ids, mask, multiple)
    assert trimmed_ids.size(1) < ids.size(1)
    padded_loss, padded_grads = loss_and_grads(model, ids, mask, targets)
    trimmed_loss, trimmed_grads = loss_and_grads(model, trimmed_ids, trimmed_mask, targets)
    assert torch.allclose(padded_loss, trimmed_loss, atol=1e-5, rtol=0)
    assert padded_grads.keys() == trimmed_grads.keys() and len(padded_grads) > 10
    for name, grad in padded_grads.items():
        assert torch.allclose(grad, trimmed_grads[name], atol=1e-5, rtol=1e-5), name


def test_bucketed_batches_give_the_per_sample_losses_of_padded_batches():
    """An epoch cut into length buckets sums to the same per-sample losses as one padded batch of all samples."""
    model = small_backbone()
    lengths = [1, 6, 2, 2, 5, 1, 3, 6]
    ids, mask, targets = history_batch(lengths, max_items=6)

    def summed(ids_, mask_, targets_):
        logits = model.forward_loss(ids_, mask_, targets_)[1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets_.reshape(-1),
                                                 reduction="sum")

    whole = summed(ids, mask, targets)
    buckets = LengthBuckets(lengths, batch_size=3, seed=1)
    parts = [summed(*trim_left_padding(ids[b], mask[b]), targets[b]) for b in buckets.epoch_batches(0)]
    assert torch.allclose(whole, torch.stack(parts).sum(), atol=1e-4, rtol=1e-6)


# --------------------------------------------------------------------------------------------- buckets
def test_length_buckets_cover_every_sample_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(0.15, size=5000), 20)
    buckets = LengthBuckets(lengths, batch_size=256, seed=7)
    epoch0, epoch1 = buckets.epoch_batches(0), buckets.epoch_batches(1)
    assert len(epoch0) == len(buckets) == 20
    assert np.array_equal(np.sort(np.concatenate(epoch0)), np.arange(5000))
    spans = [int(lengths[b].max() - lengths[b].min()) for b in epoch0]
    assert sorted(spans)[len(spans) // 2] <= 1  # most batches hold one or two adjacent lengths
    assert all(np.array_equal(a, b) for a, b in zip(epoch0, LengthBuckets(lengths, 256, seed=7).epoch_batches(0)))
    assert not all(np.array_equal(a, b) for a, b in zip(epoch0, epoch1))  # a new shuffle every epoch
    bucketed, uniform = buckets.padding_fraction(0, tokens_per_item=4)
    assert bucketed < 0.1 < 0.5 < uniform
    shards = [LengthBuckets(lengths, 256, seed=7, rank=r, world_size=3).epoch_batches(0) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = np.concatenate([np.concatenate(s) for s in shards])
    assert len(np.unique(seen)) == seen.size  # the ranks' batches are disjoint


# ------------------------------------------------------------------------------------------- lean T5
def hf_stacks(model, ids, mask, dec_embeds):
    enc = model.t5.encoder(inputs_embeds=model.shared(ids), attention_mask=mask).last_hidden_state
    dec = model.t5.decoder(inputs_embeds=dec_embeds, encoder_hidden_states=enc,
                           encoder_attention_mask=mask).last_hidden_state
    return enc, dec


def lean_stacks(model, ids, mask, dec_embeds):
    enc = t5_stack_forward(model.t5.encoder, model.shared(ids), mask)
    return enc, t5_stack_forward(model.t5.decoder, dec_embeds, None, enc, mask)


@pytest.mark.parametrize("proj", ["relu", "gated-gelu"])
def test_lean_t5_forward_equals_hugging_face(proj):
    model = small_backbone(feed_forward_proj=proj)
    ids, mask, targets = history_batch([1, 4, 2, 7], max_items=7)
    dec_embeds = model.shared(model.shift_right(targets))
    real = mask.bool()
    outputs = {}
    for name, run in (("hf", hf_stacks), ("lean", lean_stacks)):
        enc, dec = run(model, ids, mask, dec_embeds)
        model.zero_grad()
        (dec.square().sum() + enc[real].sin().sum()).backward(retain_graph=True)
        outputs[name] = (enc[real].detach(), dec.detach(),
                         {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (enc_hf, dec_hf, grads_hf), (enc_lean, dec_lean, grads_lean) = outputs["hf"], outputs["lean"]
    assert torch.allclose(enc_hf, enc_lean, atol=1e-5) and torch.allclose(dec_hf, dec_lean, atol=1e-5)
    assert grads_hf.keys() == grads_lean.keys()
    assert any("relative_attention_bias" in n for n in grads_lean)  # the bias is trained through the SDPA mask
    for name, grad in grads_hf.items():
        assert torch.allclose(grad, grads_lean[name], atol=1e-4, rtol=1e-4), name


def test_lean_and_hf_backbones_give_the_same_loss():
    model = small_backbone()
    ids, mask, targets = history_batch([3, 1, 5], max_items=5)
    lean_loss, lean_grads = loss_and_grads(model, ids, mask, targets)
    model.lean_forward = False
    hf_loss, hf_grads = loss_and_grads(model, ids, mask, targets)
    assert torch.allclose(lean_loss, hf_loss, atol=1e-5, rtol=0)
    assert all(torch.allclose(g, lean_grads[n], atol=1e-5, rtol=1e-4) for n, g in hf_grads.items())


def test_fast_dropout_keeps_the_expectation_and_drop_rate():
    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    y = fast_dropout(x, 0.1, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.004
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout: the expectation is kept
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # the gradient passes exactly where the value was kept
    assert torch.allclose(x.grad[y != 0], torch.tensor(1.0 / effective_keep(0.1)))
    assert abs(effective_keep(0.1) - 0.9) < 2 ** -16
    assert fast_dropout(x, 0.1, training=False) is x and fast_dropout(x, 0.0, training=True) is x
    mask = keep_mask((3, 1001), 0.5)
    assert mask.shape == (3, 1001) and mask.dtype == torch.bool
