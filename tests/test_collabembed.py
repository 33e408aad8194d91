"""Tests for CollabEmbed (recbole_genrec/model/sequential_recommender/collabembed.py) and
recbole_genrec/collabembed/ (losses, teacher, trainer, export, item-to-item metric).

tests/data/tiny (40 items, 120 users), leave-one-out TO split, the offline MiniLM text encoder, a
small SASRec teacher trained once per module on the training split, cache under pytest's tmp_path.
"""

import os

import numpy as np
import pytest
import torch

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from recbole.data import data_preparation

from conftest import DATA_ROOT, LOO_EVAL_ARGS, TINY_LOAD_COL, make_tiny_config, prepare_tiny
from recbole_genrec import load_data_and_model, run_recbole_genrec
from recbole_genrec.collabembed import losses
from recbole_genrec.collabembed.metrics import eval_transitions, next_item_recall
from recbole_genrec.model.sequential_recommender.collabembed import CollabEmbed
from recbole_genrec import store as dataset_store
from recbole_genrec.preprocess import cache as genrec_cache
from recbole_genrec.preprocess.features import item_embeddings
from recbole_genrec.data import create_dataset

TEACHER = {"hidden_size": 32, "n_layers": 1, "n_heads": 1, "inner_size": 64, "hidden_dropout_prob": 0.2,
           "attn_dropout_prob": 0.2}
COLLAB_SETTINGS = {"load_col": TINY_LOAD_COL, "MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 64,
                   "collab_teacher_params": TEACHER, "collab_teacher_epochs": 15,
                   "collab_teacher_learning_rate": 0.005, "collab_hidden_size": 64, "collab_hard_neg_num": 0,
                   "learning_rate": 0.003, "epochs": 4, "metrics": ["Recall", "NDCG"], "topk": [5],
                   "valid_metric": "NDCG@5", "genrec_count_flops": False}


def make_config(cache_dir, model="CollabEmbed", **overrides):
    return make_tiny_config(model, cache_dir, COLLAB_SETTINGS, **overrides)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("collab_cache")
    tiny = dict(prepare_tiny(make_config(cache)), cache=cache)
    torch.manual_seed(0)
    model = CollabEmbed(tiny["config"], tiny["train"].dataset)
    teacher_losses = model.fit_teacher(tiny["train"])
    return dict(tiny, teacher_state={k: v.clone() for k, v in model.teacher.state_dict().items()},
                teacher_losses=teacher_losses)


def build_model(tiny, **overrides):
    config = make_config(tiny["cache"], **overrides) if overrides else tiny["config"]
    torch.manual_seed(0)
    model = CollabEmbed(config, tiny["train"].dataset)
    model.teacher.load_state_dict(tiny["teacher_state"])
    model.teacher_ready.fill_(True)
    return model


def train_steps(model, train_data, steps, lr=0.003):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    done = 0
    while done < steps:
        for batch in train_data:
            loss = model.calculate_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    model.eval()


def batches(train_data):
    return [batch for batch in train_data]


@torch.no_grad()
def seq_alignment(model, data):
    model.eval()
    cos = [(model.encode(b["item_id"]) * model.teacher_history(b["item_id_list"], b["item_length"])).sum(-1)
           for b in data]
    return torch.cat(cos).mean().item()


@torch.no_grad()
def id_alignment(model):
    model.eval()
    ids = torch.arange(1, model.n_items)
    return (model.encode(ids) * model.teacher_items(ids)).sum(-1).mean().item()


def co_occurrence(train_data, window):
    """[N, N] bool: items within ``window`` positions of each other in a training history."""
    n = train_data.dataset.item_num
    pairs = np.zeros((n, n), dtype=bool)
    for b in train_data:
        seq, length, target = b["item_id_list"], b["item_length"], b["item_id"]
        for row in range(len(target)):
            recent = seq[row, max(0, int(length[row]) - window):int(length[row])]
            pairs[int(target[row]), recent.numpy()] = True
    pairs = pairs | pairs.T
    np.fill_diagonal(pairs, False)
    pairs[0, :] = pairs[:, 0] = False
    return torch.from_numpy(pairs)


@torch.no_grad()
def co_occurrence_gap(model, pairs):
    model.eval()
    vectors = model.item_vectors()
    sims = vectors @ vectors.t()
    others = ~pairs
    others.fill_diagonal_(False)
    others[0, :] = others[:, 0] = False
    return (sims[pairs].mean() - sims[others].mean()).item()


# ----------------------------------------------------------------------------- losses switch off
@pytest.mark.parametrize("off,kept", [("collab_seq_weight", {"id", "hist"}), ("collab_id_weight", {"seq", "hist"}),
                                      ("collab_hist_weight", {"seq", "id"})])
@pytest.mark.slow
def test_zero_weight_removes_the_term(tiny, off, kept):
    model = build_model(tiny, **{off: 0.0})
    batch = next(iter(tiny["train"]))
    terms = model.loss_terms(batch)
    assert set(terms) == kept
    torch.manual_seed(1)
    total = model.calculate_loss(batch)
    torch.manual_seed(1)
    assert torch.allclose(total, sum(model.loss_terms(batch).values()))


@pytest.mark.slow
def test_all_weights_zero_is_rejected(tiny):
    with pytest.raises(ValueError, match="nothing to train"):
        build_model(tiny, collab_seq_weight=0.0, collab_id_weight=0.0, collab_hist_weight=0.0)


@pytest.mark.slow
def test_teacher_trained_on_train_split_and_frozen(tiny):
    assert tiny["teacher_losses"][-1] < tiny["teacher_losses"][0]
    model = build_model(tiny)
    assert all(not p.requires_grad for p in model.teacher.parameters())
    assert all(p.requires_grad for p in model.tower.parameters())
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    train_steps(model, tiny["train"], 5)
    assert all(torch.equal(before[k], v) for k, v in model.teacher.state_dict().items())
    model.train()
    assert not model.teacher.training  # no teacher dropout while the tower trains
    untrained = CollabEmbed(tiny["config"], tiny["train"].dataset)
    with pytest.raises(RuntimeError, match="teacher is untrained"):
        untrained.calculate_loss(next(iter(tiny["train"])))


# ----------------------------------------------------------------------------- each loss moves its way
@pytest.mark.slow
def test_seq_loss_pulls_items_towards_teacher_history(tiny):
    model = build_model(tiny, collab_id_weight=0.0, collab_hist_weight=0.0)
    data = batches(tiny["train"])
    before = seq_alignment(model, data)
    train_steps(model, tiny["train"], 40)
    after = seq_alignment(model, data)
    assert after > before + 0.2, (before, after)


@pytest.mark.slow
def test_id_loss_pulls_items_towards_teacher_id_table(tiny):
    model = build_model(tiny, collab_seq_weight=0.0, collab_hist_weight=0.0)
    before = id_alignment(model)
    train_steps(model, tiny["train"], 40)
    after = id_alignment(model)
    assert after > before + 0.2, (before, after)


@pytest.mark.slow
def test_history_loss_brings_co_occurring_items_closer(tiny):
    model = build_model(tiny, collab_seq_weight=0.0, collab_id_weight=0.0)
    pairs = co_occurrence(tiny["train"], model.window)
    before = co_occurrence_gap(model, pairs)
    train_steps(model, tiny["train"], 40)
    after = co_occurrence_gap(model, pairs)
    assert after > 0 and after > before + 0.05, (before, after)


@pytest.mark.slow
def test_hard_negatives_run_and_train(tiny):
    model = build_model(tiny, collab_hard_neg_num=4, collab_hard_neg_threshold=0.5)
    data = batches(tiny["train"])
    before = seq_alignment(model, data)
    train_steps(model, tiny["train"], 20)
    assert seq_alignment(model, data) > before


# ----------------------------------------------------------------------------- loss pieces
def test_mine_hard_negatives_respects_threshold_and_exclusions():
    vectors = torch.nn.functional.normalize(torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.99, 0.14], [0.7, 0.7], [0.0, 1.0], [-1.0, 0.0]]), dim=-1)
    vectors[0] = 0
    anchor = vectors[1:2]  # item 1
    exclude = torch.zeros(1, 6, dtype=torch.bool)
    exclude[0, [0, 1]] = True
    index, valid = losses.mine_hard_negatives(anchor, vectors, exclude, threshold=0.9, k=2)
    assert index[0].tolist() == [3, 4]  # item 2 (cos 0.99) is a probable positive, 3 (0.71) and 4 (0.0) follow
    assert valid.all()
    exclude[0, 3] = True
    index, valid = losses.mine_hard_negatives(anchor, vectors, exclude, threshold=0.9, k=4)
    assert index[0, :2].tolist() == [4, 5] and valid[0].tolist() == [True, True, False, False]


def test_info_nce_masks_duplicate_items_and_uses_hard_negatives():
    torch.manual_seed(0)
    anchor = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    positive = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    items = torch.tensor([5, 5, 7])
    loss = losses.masked_info_nce(anchor, positive, items, tau=0.5)
    logits = anchor @ positive.t() / 0.5
    manual = [-torch.log_softmax(logits[0, [0, 2]], 0)[0], -torch.log_softmax(logits[1, [1, 2]], 0)[0],
              -torch.log_softmax(logits[2], 0)[2]]
    assert torch.allclose(loss, torch.stack(manual).mean(), atol=1e-6)
    hard = positive[[2, 2, 0]].unsqueeze(1)  # [3, 1, 4]
    valid = torch.tensor([[True], [False], [True]])
    with_hard = losses.masked_info_nce(anchor, positive, items, tau=0.5, hard=hard, hard_valid=valid)
    extra = [logits[0, [0, 2, 2]], logits[1, [1, 2]], logits[2, [2, 0, 1, 0]]]
    manual = torch.stack([-torch.log_softmax(row, 0)[0] for row in extra]).mean()
    assert torch.allclose(with_hard, manual, atol=1e-6)


def test_window_positives_come_from_recent_history():
    seq = torch.tensor([[3, 4, 5, 6, 0], [7, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    length = torch.tensor([4, 1, 5])
    seen = [set() for _ in range(3)]
    for _ in range(200):
        for row, item in enumerate(losses.window_positives(seq, length, 2).tolist()):
            seen[row].add(item)
    assert seen == [{5, 6}, {7}, {4, 5}]


# ----------------------------------------------------------------------------- recommendation
@pytest.mark.slow
def test_full_sort_predict_is_cosine_of_mean_history(tiny):
    model = build_model(tiny)
    model.eval()
    batch = next(iter(tiny["train"]))
    scores = model.full_sort_predict(batch)  # [B, N]
    assert scores.shape == (len(batch), model.n_items)
    vectors = model.item_vectors()
    row = 3
    hist = batch["item_id_list"][row, :batch["item_length"][row]]
    user = torch.nn.functional.normalize(vectors[hist].mean(0), dim=-1)
    assert torch.allclose(scores[row], vectors @ user, atol=1e-5)
    assert torch.allclose(model.predict(batch), scores[torch.arange(len(batch)), batch["item_id"]], atol=1e-5)


# ----------------------------------------------------------------------------- export and consumers
@pytest.mark.slow
def test_export_is_used_by_item_embeddings_alpharec_and_tokenizer(tiny, monkeypatch):
    from recbole_genrec.model.general_recommender.alpharec import AlphaRec
    from recbole_genrec.preprocess.hook import prepare_features
    import recbole_genrec.tokenizers as tokenizers

    model = build_model(tiny)
    train_steps(model, tiny["train"], 10)
    path = model.export_embeddings()
    assert path == os.path.join(str(tiny["cache"]), "tiny", "embeddings-collab.npy")
    exported = model.enhanced_embeddings()  # [n_items - 1, d]
    row_of = {t: i for i, t in enumerate(model.item_tokens)}
    tokens_file, matrix, _, _ = dataset_store.load_item_embeddings(os.path.dirname(path), "collab")
    assert tokens_file == model.item_tokens and np.array_equal(matrix, exported)

    # AlphaRec (item_embeddings) with item_embedding_source: collab
    config = make_config(tiny["cache"], model="AlphaRec", item_embedding_source="collab", neg_num=4,
                         alpharec_hidden_size=16, embedding_size=8, eval_args=LOO_EVAL_ARGS)
    dataset = create_dataset(config)
    emb = item_embeddings(dataset).numpy()  # [n_items, d]
    tokens = dataset.field2id_token[dataset.iid_field]
    assert emb.shape == (len(tokens), exported.shape[1]) and not emb[0].any()
    expected = np.stack([exported[row_of[t]] for t in tokens[1:]])
    np.testing.assert_allclose(emb[1:], expected, rtol=0, atol=1e-7)
    train_data, _, _ = data_preparation(config, dataset)
    alpharec = AlphaRec(config, train_data.dataset)
    np.testing.assert_allclose(alpharec.item_lm[1:].numpy(), expected, rtol=0, atol=1e-7)

    # the semantic-ID tokenizer receives the collab matrix
    seen = {}
    real = tokenizers.generate_semantic_ids

    def spy(emb, **kwargs):
        seen["emb"] = np.array(emb)
        return real(emb, **kwargs)

    monkeypatch.setattr(tokenizers, "generate_semantic_ids", spy)
    sid_config = make_config(tiny["cache"], model="SASRec", genrec_features=["text_emb", "sid"],
                             item_embedding_source="collab", sid_method="rkmeans", sid_levels=2,
                             sid_codebook_size=4)
    summary = prepare_features(sid_config)
    assert summary["cache"]["embeddings"] == "external:collab"
    hook_tokens = genrec_cache.load_json(os.path.join(str(tiny["cache"]), "tiny", "items.json"))["item_tokens"]
    np.testing.assert_array_equal(seen["emb"], np.stack([exported[row_of[t]] for t in hook_tokens]))
    assert summary["embedding_dim"] == exported.shape[1]


@pytest.mark.slow
def test_teacher_checkpoint_round_trip(tiny, tmp_path):
    trained = build_model(tiny)
    path = str(tmp_path / "teacher.pth")
    from recbole_genrec.collabembed.teacher import teacher_config

    torch.save({"config": teacher_config(tiny["config"], "SASRec", TEACHER),
                "state_dict": trained.teacher.state_dict()}, path)
    model = CollabEmbed(make_config(tiny["cache"], collab_teacher_checkpoint=path), tiny["train"].dataset)
    assert bool(model.teacher_ready)
    for key, value in trained.teacher.state_dict().items():
        assert torch.equal(model.teacher.state_dict()[key], value)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_run_exports_best_model_and_beats_raw_embeddings(tiny, monkeypatch):
    from recbole.data.dataloader import TrainDataLoader

    teacher_data = []
    fit_teacher = CollabEmbed.fit_teacher

    def spy(self, train_data, show_progress=False):
        teacher_data.append(train_data)
        return fit_teacher(self, train_data, show_progress)

    monkeypatch.setattr(CollabEmbed, "fit_teacher", spy)
    result = run_recbole_genrec(model="CollabEmbed", dataset="tiny", saved=True,
                                config_dict=dict(make_config(tiny["cache"]).external_config_dict, epochs=6))
    assert set(result["test_result"]) == {"recall@5", "ndcg@5"}
    assert result["checkpoint"] and os.path.isfile(result["checkpoint"])
    # the trainer trained the teacher once, on the training dataloader (same split as the fixture's)
    assert len(teacher_data) == 1 and isinstance(teacher_data[0], TrainDataLoader)
    assert len(teacher_data[0].dataset) == len(tiny["train"].dataset)
    config, model, dataset, _, _, test_data = load_data_and_model(result["checkpoint"], data_path=DATA_ROOT)
    assert bool(model.teacher_ready)
    _, matrix, _, _ = dataset_store.load_item_embeddings(os.path.join(str(tiny["cache"]), "tiny"), "collab")
    np.testing.assert_allclose(matrix, model.enhanced_embeddings(), rtol=0, atol=1e-6)  # best checkpoint exported

    # next-item retrieval from the previous item on the test transitions: enhanced > raw LM
    previous, following = eval_transitions(test_data, model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.ITEM_ID)
    raw = next_item_recall(model.item_lm, previous, following, ks=(5,))["recall@5"]
    enhanced = next_item_recall(model.item_vectors().detach(), previous, following, ks=(5,))["recall@5"]
    assert enhanced > raw, (raw, enhanced)
