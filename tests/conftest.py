"""Configuration that the test modules share for runs on tests/data/tiny (40 items in 5 themes, 120 users).

The test modules import these helpers by name, e.g. ``from conftest import make_tiny_config``. That works
because pytest's default ``prepend`` import mode (pyproject.toml sets no other) puts this folder on sys.path
before it imports this file, so the test modules get the module object that pytest loaded. If the suite ever
switches to ``--import-mode=importlib``, add "tests" to ``pythonpath`` in pyproject.toml.

RecBole is imported inside the functions. Test modules that never build a tiny config (test_compat, ...)
then do not import it just because they are collected.
"""

import contextlib
import copy
import os
import sys

import pytest

DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
LOO_EVAL_ARGS = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"}
TINY_LOAD_COL = {"inter": ["user_id", "item_id", "timestamp"]}  # tiny.inter without its rating column

# The generative models (TIGER, DiscRec, PRORec): leave-one-out next-item data and a 1+1-layer T5 with d_model 32.
TINY_T5 = {
    "eval_args": LOO_EVAL_ARGS, "load_col": TINY_LOAD_COL,
    "d_model": 32, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "d_kv": 16,
    "beam_batch_size": 16, "train_batch_size": 64, "metrics": ["Recall", "NDCG"], "genrec_count_flops": False,
}

# TIGER's recipe on the tiny set, also used by PRORec's stage II (TIGER over the stage-I codes).
TINY_TIGER = {
    "MAX_ITEM_LIST_LENGTH": 10, "dropout_rate": 0.0, "use_user_token": False, "beam_size": 8,
    "topk": [5], "valid_metric": "Recall@5",
    "learning_rate": 0.01, "warmup_steps": 5, "lr_scheduler": "cosine", "eval_step": 4, "stopping_step": 10,
}


@pytest.fixture(scope="session", autouse=True)
def run_in_a_temporary_folder(tmp_path_factory):
    """RecBole writes ``log/``, ``log_tensorboard/`` and ``saved/`` into the working directory, and a side-by-side
    run ``results/``: every test runs in a temporary folder, so that none writes into the checkout."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is fastest and avoids OpenMP spin-waiting on a shared, loaded CPU. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``; the previous thread count is restored after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_settings(cache_dir, *presets, **overrides):
    """config_dict of a run on tests/data/tiny.

    The keys every tiny run shares: the test data, the preprocessing cache in ``cache_dir`` and checkpoints in
    ``cache_dir/saved``, no progress bars, seed 2020. Then each preset dict in order (copied, so that no run
    can change a shared one), then ``overrides``; later keys win.
    """
    settings = {
        "data_path": DATA_ROOT, "genrec_cache_dir": str(cache_dir), "checkpoint_dir": str(cache_dir / "saved"),
        "show_progress": False, "seed": 2020,
    }
    for preset in presets:
        settings.update(copy.deepcopy(preset))
    settings.update(overrides)
    return settings


@contextlib.contextmanager
def recbole_argv():
    """Keep pytest's command line out of RecBole, which reads ``--key=value`` options from sys.argv."""
    saved = sys.argv
    sys.argv = [saved[0]]
    try:
        yield
    finally:
        sys.argv = saved


def make_tiny_config(model, cache_dir, *presets, **overrides):
    """A ``recbole_genrec.Config`` of ``model`` on tests/data/tiny, built from ``tiny_settings``."""
    from recbole_genrec import Config  # the package applies its compat shims before RecBole is imported

    settings = tiny_settings(cache_dir, *presets, **overrides)
    with recbole_argv():
        return Config(model=model, dataset="tiny", config_dict=settings)


def prepare_tiny(config):
    """Seeded dataset and dataloaders of ``config``: dict with config, dataset, train, valid and test."""
    import recbole_genrec  # noqa: F401  (compat shims before RecBole)
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_genrec.data import create_dataset

    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return {"config": config, "dataset": dataset, "train": train_data, "valid": valid_data, "test": test_data}


def discrec_branch(**overrides):
    """The DiscRec branch arguments its yaml states (TIGER.yaml, then DiscRec.yaml), with ``overrides``."""
    import yaml

    from recbole_genrec.model.sequential_recommender.discrec import branch_kwargs
    from recbole_genrec.utils import properties_dir

    values = {}
    for name in ("TIGER", "DiscRec"):
        with open(os.path.join(properties_dir(), "model", f"{name}.yaml"), encoding="utf-8") as f:
            values.update(yaml.safe_load(f))
    return {**branch_kwargs(values), **overrides}


def popularity_recall(tiny, k):
    """Recall@k (= hit rate under leave-one-out) of recommending the k most frequent training items to every user of
    ``tiny["test"]`` (``tiny`` as returned by :func:`prepare_tiny`): the baseline a trained model must beat."""
    import torch

    dataset = tiny["train"].dataset
    counts = torch.bincount(dataset.inter_feat[dataset.iid_field], minlength=dataset.item_num)
    counts[0] = -1  # the padding item is never recommended
    top = set(torch.topk(counts, k).indices.tolist())
    hits = total = 0
    for interaction, _, _, positive_i in tiny["test"]:
        hits += sum(int(i) in top for i in positive_i.tolist())
        total += len(interaction)
    return hits / total


def assert_groups_encode_like_full_batch(model, input_ids, attention_mask, n_groups):
    """``model.encode_groups`` on ``model.length_groups`` (what beam search encodes) gives, on every real position, the
    states of ``model.encode`` on the whole padded batch; the groups must really drop leading columns."""
    import torch

    with torch.no_grad():
        full = model.encode(input_ids, attention_mask)  # [B, S, d]
        order, groups = model.length_groups(attention_mask, n_groups)
        parts = model.encode_groups(input_ids[order], attention_mask[order], groups)  # [b_g, S - start, d] each
    assert any(start > 0 for _, _, start in groups)
    for (begin, end, start), part in zip(groups, parts):
        rows = order[begin:end]
        real = attention_mask[rows, start:].bool()  # [b_g, S - start]
        assert real.sum() == attention_mask[rows].sum()  # no real token was trimmed
        torch.testing.assert_close(part[real], full[rows, start:][real], rtol=1e-5, atol=1e-5)
