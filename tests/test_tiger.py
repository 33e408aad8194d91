# coding: utf-8
"""Tests for TIGER (recbole_genrec/model/sequential_recommender/tiger.py) and GenerativeTrainer
(recbole_genrec/trainer/generative_trainer.py).

tests/data/tiny (40 items in 5 themes, 120 users walking through one theme), leave-one-out split, residual k-means
semantic IDs (2 levels of 8 codes + collision level), a 1+1-layer T5 with d_model 32 and a cache under tmp_path.
"""

import math
import os

import pytest
import torch

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from recbole.data import data_preparation
from recbole.data.interaction import Interaction
from recbole.data.transform import construct_transform
from recbole.utils import get_flops, init_seed

from conftest import (DATA_ROOT, LOO_EVAL_ARGS, TINY_T5, TINY_TIGER, make_tiny_config, popularity_recall,
                      prepare_tiny, recbole_argv, tiny_settings)
from recbole_genrec import load_data_and_model, run_recbole_genrec
from recbole_genrec.model.sequential_recommender.tiger import TIGER
from recbole_genrec.trainer import GenerativeTrainer, TIGERTrainer
from recbole_genrec.trainer.generative_trainer import lr_factor
from recbole_genrec.data import create_dataset
from recbole_genrec.run_builder import trainer_class

torch.set_num_threads(1)

TIGER_SETTINGS = {**TINY_T5, **TINY_TIGER, "sid_method": "rkmeans", "sid_levels": 2, "sid_codebook_size": 8,
                  "epochs": 12}
BEAM = TIGER_SETTINGS["beam_size"]


def make_config(cache_dir, **overrides):
    return make_tiny_config("TIGER", cache_dir, TIGER_SETTINGS, **overrides)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Data of the tiny set and a TIGER trained by GenerativeTrainer (checkpoint of the best validation)."""
    cache = tmp_path_factory.mktemp("tiger_cache")
    tiny = dict(prepare_tiny(make_config(cache)), cache=cache)
    config, train_data = tiny["config"], tiny["train"]
    init_seed(config["seed"], config["reproducibility"])
    model = TIGER(config, train_data.dataset)
    trainer = trainer_class(config)(config, model)
    trainer.fit(train_data, tiny["valid"], saved=True)
    test_result = trainer.evaluate(tiny["test"], load_best_model=True)  # loads the best checkpoint into `model`
    model.eval()
    return dict(tiny, model=model, trainer=trainer, test_result=test_result)


def first_test_batch(tiny):
    interaction = next(iter(tiny["test"]))[0]
    return interaction


def test_trainer_is_registered_and_loss_decreases(tiny):
    assert TIGERTrainer is GenerativeTrainer and isinstance(tiny["trainer"], GenerativeTrainer)
    losses = [tiny["trainer"].train_loss_dict[e] for e in sorted(tiny["trainer"].train_loss_dict)]
    assert len(losses) >= 4 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.6 * losses[0]
    assert isinstance(tiny["trainer"].optimizer, torch.optim.AdamW)


def test_lr_schedule_shapes():
    assert lr_factor(0, 10, 100, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, "cosine") == pytest.approx(0.0)
    assert lr_factor(55, 10, 100, "linear") == pytest.approx(0.5)
    assert lr_factor(39, 10, 100, "inverse_sqrt") == pytest.approx(0.5)
    assert lr_factor(70, 10, 100, "constant") == 1.0


def test_full_sort_predict_returns_beam_items_only(tiny):
    model, interaction = tiny["model"], first_test_batch(tiny)
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)  # [B, n_items]
    assert scores.shape == (len(interaction), model.n_items)
    finite = torch.isfinite(scores)
    assert not finite[:, 0].any()
    assert (finite.sum(dim=1) <= BEAM).all() and (finite.sum(dim=1) >= 1).all()
    assert (scores[finite] <= 0).all()  # summed log-probabilities
    items, beam_scores = model.beam_search(*model.encoder_inputs(interaction[model.ITEM_SEQ],
                                                                 interaction[model.ITEM_SEQ_LEN]))
    for row in range(items.size(0)):
        real = items[row][items[row] > 0]
        assert real.unique().numel() == real.numel()  # distinct
        assert (model.code_table.codes[real] >= 0).all()  # real items with semantic IDs
        assert torch.equal(finite[row].nonzero().flatten().sort().values, real.sort().values)
        assert torch.all(beam_scores[row, :-1] >= beam_scores[row, 1:])


def test_predict_equals_beam_scores(tiny):
    model, interaction = tiny["model"], first_test_batch(tiny)
    seq, seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    with torch.no_grad():
        items, beam_scores = model.beam_search(*model.encoder_inputs(seq, seq_len))  # [B, beam]
        rows = torch.arange(items.size(0)).repeat_interleave(items.size(1))
        flat = {model.ITEM_SEQ: seq[rows], model.ITEM_SEQ_LEN: seq_len[rows], model.ITEM_ID: items.flatten()}
        predicted = model.predict(Interaction(flat)).view_as(beam_scores)  # [B, beam]
    valid = items > 0
    assert torch.allclose(predicted[valid], beam_scores[valid], atol=1e-4)


def test_trained_tiger_beats_popularity_and_random(tiny):
    recall = tiny["test_result"]["recall@5"]
    random_recall = 5 / (tiny["model"].n_items - 1)
    pop_recall = popularity_recall(tiny, 5)
    assert recall > max(random_recall, pop_recall) + 0.15, (recall, pop_recall, random_recall)


def test_checkpoint_round_trip_recommends_identically(tiny):
    checkpoint = tiny["trainer"].saved_model_file
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")
    assert "code_table.codes" in state["state_dict"] and "code_table.prefix_keys_0" in state["state_dict"]
    _, loaded, _, _, _, test_data = load_data_and_model(checkpoint, data_path=DATA_ROOT)
    interaction = next(iter(test_data))[0]
    seq, seq_len = interaction[loaded.ITEM_SEQ], interaction[loaded.ITEM_SEQ_LEN]
    assert torch.equal(loaded.code_table.codes, tiny["model"].code_table.codes)
    assert torch.equal(loaded.recommend(seq, seq_len, 5), tiny["model"].recommend(seq, seq_len, 5))
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.full_sort_predict(interaction), tiny["model"].full_sort_predict(interaction))


def test_recommend_shapes_and_mode(tiny):
    model, interaction = tiny["model"], first_test_batch(tiny)
    model.train()
    recs = model.recommend(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], 12)  # k > beam_size
    assert model.training  # mode restored
    model.eval()
    assert recs.shape == (len(interaction), 12)
    assert all(len(set(r)) == len(r) for r in recs.tolist())


def test_beam_smaller_than_topk_raises(tiny):
    config = make_config(tiny["cache"], beam_size=3, topk=[5, 10])
    with pytest.raises(ValueError, match=r"beam_size=3 is smaller than max\(topk\)=10"):
        TIGER(config, tiny["train"].dataset)


def test_user_token_is_placed_before_history_and_trains(tiny):
    config = make_config(tiny["cache"], use_user_token=True, user_token_buckets=16)
    torch.manual_seed(0)
    model = TIGER(config, tiny["train"].dataset)
    assert model.backbone.config.vocab_size == model.code_table.vocab_size + 16
    interaction = first_test_batch(tiny)
    seq, seq_len, users = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], interaction[model.USER_ID]
    input_ids, mask = model.encoder_inputs(seq, seq_len, users)  # [B, T*L+2]
    plain_ids, plain_mask = model.code_table.history_tokens(seq, seq_len)  # [B, T*L+1]
    assert input_ids.size(1) == plain_ids.size(1) + 1
    assert torch.equal(input_ids[:, 1:][plain_mask.bool()], plain_ids[plain_mask.bool()])
    first = mask.argmax(dim=1)  # first real token = the user token
    user_tok = input_ids.gather(1, first.unsqueeze(1)).squeeze(1)
    assert torch.equal(user_tok, model.user_tokens(users))
    assert ((user_tok >= model.code_table.vocab_size) & (user_tok < model.code_table.vocab_size + 16)).all()
    assert torch.equal(mask.sum(1), plain_mask.sum(1) + 1)
    loss = model.calculate_loss(next(iter(tiny["train"])))
    assert torch.isfinite(loss)
    loss.backward()
    with pytest.raises(ValueError, match="user ids"):
        model.encoder_inputs(seq, seq_len)


def test_get_flops_and_sampled_evaluation_use_predict(tiny):
    model, config = tiny["model"], tiny["config"]
    flops = get_flops(model, tiny["train"].dataset, torch.device("cpu"), None, construct_transform(config))
    assert flops > 0
    sampled = make_config(tiny["cache"], eval_args=dict(LOO_EVAL_ARGS, mode="uni20"))
    _, _, test_data = data_preparation(sampled, create_dataset(sampled))  # same split, cached features
    result = GenerativeTrainer(sampled, model).evaluate(test_data, load_best_model=False)
    assert result["recall@5"] > 5 / 21 + 0.2  # 1 positive among 21 candidates scored by predict


@pytest.mark.slow
def test_run_recbole_genrec_end_to_end(tiny, tmp_path):
    with recbole_argv():
        result = run_recbole_genrec(
            model="TIGER", dataset="tiny",
            config_dict=tiny_settings(tiny["cache"], TIGER_SETTINGS, epochs=2, eval_step=1,
                                      checkpoint_dir=str(tmp_path), genrec_count_flops=True, topk=[5, 8],
                                      use_user_token=True, user_token_buckets=32),
        )
    assert {"recall@5", "recall@8", "ndcg@5"} <= set(result["test_result"])
    assert result["epochs"] == 2 and result["train_seconds_per_epoch"] > 0
    assert os.path.isfile(result["checkpoint"])


def test_time_budget_smaller_than_one_epoch_fails_before_training(tiny):
    """The probe before the first epoch (forward + backward of a few batches) rejects a budget below one epoch, with
    the arithmetic, and leaves the weights and the random state as they were."""
    config = make_config(tiny["cache"], epochs=4, train_time_budget_s=1e-6, warmup_steps=0)
    model = TIGER(config, tiny["train"].dataset)
    trainer = GenerativeTrainer(config, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    with pytest.raises(ValueError, match=r"too small for one epoch: \d+ batches x .* Raise train_time_budget_s"):
        trainer.fit(tiny["train"], tiny["valid"], saved=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.random.get_rng_state()) and all(p.grad is None for p in model.parameters())
    trainer.time_budget = 3600.0
    n_batches = len(trainer._buckets)
    assert 0 < trainer.check_time_budget(tiny["train"]) < 3600.0 and n_batches == -(-len(tiny["train"].dataset) // 64)


@pytest.mark.slow
def test_time_budget_stops_after_validating_the_last_trained_weights(tiny, tmp_path, monkeypatch):
    """Past the budget the weights cannot change: the first validation after the last trained epoch is real, the next
    one ends the run (equal scores count as improvements in RecBole's early stopping, so without this every skipped
    epoch was validated again up to `epochs`)."""
    monkeypatch.setattr(GenerativeTrainer, "check_time_budget", lambda self, train_data: 0.0)
    with recbole_argv():
        result = run_recbole_genrec(
            model="TIGER", dataset="tiny",
            config_dict=tiny_settings(tiny["cache"], TIGER_SETTINGS, epochs=8, eval_step=1, stopping_step=10,
                                      warmup_steps=0, train_time_budget_s=1e-6, checkpoint_dir=str(tmp_path)),
        )
    assert result["epochs"] == 1 and len(result["train_losses"]) == 2  # epoch 0 trained + validated, epoch 1 stops
    assert "recall@5" in result["test_result"] and result["best_valid_result"]


@pytest.mark.slow
def test_time_budget_caps_training_time_not_the_schedule(tiny, tmp_path, monkeypatch):
    """train_time_budget_s shorter than one epoch (the pre-training probe switched off): the epoch that crosses it is
    the last one trained, the others are skipped and not timed, and validation / test / checkpoint still happen."""
    monkeypatch.setattr(GenerativeTrainer, "check_time_budget", lambda self, train_data: 0.0)
    with recbole_argv():
        result = run_recbole_genrec(
            model="TIGER", dataset="tiny",
            config_dict=tiny_settings(tiny["cache"], TIGER_SETTINGS, epochs=4, eval_step=4, warmup_steps=0,
                                      train_time_budget_s=1e-6, checkpoint_dir=str(tmp_path)),
        )
    assert result["epochs"] == 1 and len(result["train_losses"]) == 4
    assert result["train_losses"][0] > 0 and all(loss == 0.0 for loss in result["train_losses"][1:])
    assert os.path.isfile(result["checkpoint"]) and "recall@5" in result["test_result"]


def test_time_budget_counts_training_seconds_and_keeps_the_schedule_of_epochs(tiny):
    """The budget is crossed by the training seconds so far (restored on resume), and the learning-rate schedule
    spans the configured epochs whatever the budget."""
    config = make_config(tiny["cache"], epochs=4, train_time_budget_s=3600.0, warmup_steps=0)
    trainer = GenerativeTrainer(config, TIGER(config, tiny["train"].dataset))
    trainer.trained_seconds = 3599.0
    assert not trainer._budget_crossed()
    trainer.trained_seconds = 3600.0
    assert trainer._budget_crossed()
    trainer.budget_stop_epoch = 2
    assert trainer.skips_epoch(3) and not trainer.skips_epoch(2)
    trainer.steps_per_epoch, trainer.global_step = 10, 29
    lr = config["learning_rate"]
    assert trainer._set_lr() == pytest.approx(lr * lr_factor(29, 0, 40, "cosine"))  # the schedule ends at step 40
