# coding: utf-8
"""Multi-process runs on RecBole's distributed path, on CPU with Gloo (recbole_genrec/distributed.py,
recbole_genrec.quick_start.run(nproc=2), GenerativeTrainer's sharded evaluation).

Data: tests/data/tiny without user u120, i.e. 119 users, so that RecBole's ``DistributedSampler`` pads rank 1's
evaluation shard with a repeated user (an exact reduction must drop it). Caches, checkpoints and RecBole's
./log live under tmp_path; every multi-process run gets a free port. Two spawned runs (TIGER, SASRec) keep the file
short; the TIGER run also counts every cache file write of both ranks (a ``sitecustomize`` on the children's
PYTHONPATH wraps ``recbole_genrec.preprocess.cache.atomic_write``, through which every cache file is written).
"""

import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from recbole.trainer import Trainer

from recbole_genrec import distributed
from recbole_genrec.quick_start import run
from recbole_genrec.trainer import GenerativeTrainer

torch.set_num_threads(1)

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is unavailable")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOO = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"}
DROPPED_USER = "u120"

_WRITE_COUNTER = '''
import os
log = os.environ.get("GENREC_TEST_WRITE_LOG")
if log:
    from recbole_genrec.preprocess import cache

    _atomic_write = cache.atomic_write

    def atomic_write(path, write_fn, mode="wb"):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\\t{os.path.abspath(path)}\\n")
        return _atomic_write(path, write_fn, mode)

    cache.atomic_write = atomic_write
'''


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def write_tiny_119(root):
    """tests/data/tiny without one user: ``root/tiny/tiny.{inter,item}``."""
    folder = root / "tiny"
    folder.mkdir(parents=True)
    with open(os.path.join(HERE, "data", "tiny", "tiny.inter"), encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith(DROPPED_USER + "\t")]
    (folder / "tiny.inter").write_text("".join(lines), encoding="utf-8")
    with open(os.path.join(HERE, "data", "tiny", "tiny.item"), encoding="utf-8") as f:
        (folder / "tiny.item").write_text(f.read(), encoding="utf-8")
    return str(root)


def common_settings(root, data_path, **extra):
    settings = {
        "data_path": data_path, "genrec_cache_dir": str(root / "cache"), "checkpoint_dir": str(root / "saved"),
        "show_progress": False, "state": "ERROR", "seed": 2020, "eval_args": LOO, "worker": 0,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": 10,
        "topk": [5], "valid_metric": "Recall@5", "train_batch_size": 64, "eval_batch_size": 32,
        "epochs": 2, "eval_step": 2, "stopping_step": 10, "genrec_count_flops": False,
    }
    settings.update(extra)
    return settings


def tiger_settings(root, data_path):
    return common_settings(
        root, data_path, sid_method="rkmeans", sid_levels=2, sid_codebook_size=8, d_model=32, d_ff=64,
        num_encoder_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, dropout_rate=0.0, use_user_token=False,
        beam_size=8, beam_batch_size=16, metrics=["Recall", "NDCG", "ItemCoverage"], learning_rate=0.01,
        warmup_steps=5,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tmp folder as working directory (RecBole writes ./log), pytest's argv kept out of RecBole, and the
    children's PYTHONPATH carrying the write counter."""
    root = tmp_path_factory.mktemp("distributed")
    hooks = root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_WRITE_COUNTER, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(sys, "argv", [sys.argv[0]])
        python_path = os.pathsep.join(p for p in (str(hooks), REPO, os.environ.get("PYTHONPATH")) if p)
        mp.setenv("PYTHONPATH", python_path)
        mp.setenv("GENREC_TEST_WRITE_LOG", str(root / "writes.tsv"))
        yield root


@pytest.fixture(scope="module")
def tiny_119(workspace):
    return write_tiny_119(workspace / "data")


@pytest.fixture(scope="module")
def tiger_two_ranks(workspace, tiny_119):
    """TIGER trained by 2 CPU ranks from an empty cache (both ranks start together)."""
    result = run("TIGER", "tiny", config_dict=tiger_settings(workspace, tiny_119), nproc=2, port=free_port())
    return result


# ============================================================================= spawned runs
@pytest.mark.slow
def test_tiger_trains_on_two_cpu_ranks(tiger_two_ranks):
    result = tiger_two_ranks
    assert result["world_size"] == 2 and result["epochs"] == 2
    first, second = result["train_losses"]
    assert second < first  # the loss of rank 0's shard falls
    assert set(result["test_result"]) == {"recall@5", "ndcg@5", "itemcoverage@5"}
    assert 0 < result["test_result"]["recall@5"] <= 1
    assert os.path.isfile(result["checkpoint"])  # written by rank 0, read back by both ranks for the test set


@pytest.mark.slow
def test_preprocessing_cache_written_once_by_one_rank(workspace, tiger_two_ranks):
    with open(workspace / "writes.tsv", encoding="utf-8") as f:
        writes = [line.rstrip("\n").split("\t") for line in f]
    cache_root = str(workspace / "cache")
    cache_writes = [(pid, path) for pid, path in writes if path.startswith(cache_root)]
    paths = [path for _, path in cache_writes]
    names = {os.path.basename(p) for p in paths}
    assert {"items.json", "embeddings-text.npy"} <= names
    for prefix, suffix in (("codes-", ".npy"), ("emb-", ".genemb"), ("sid-", ".gensid")):  # keyed artifacts
        assert any(n.startswith(prefix) and n.endswith(suffix) for n in names), (prefix, sorted(names))
    assert len(paths) == len(set(paths))  # every cache file written exactly once ...
    assert len({pid for pid, _ in cache_writes}) == 1  # ... and all of them by one rank
    assert int(cache_writes[0][0]) != os.getpid()  # (a spawned rank, not this process)


@pytest.mark.slow
def test_sharded_evaluation_equals_one_process(workspace, tiny_119, tiger_two_ranks):
    """The 2-rank run evaluated its best checkpoint on the test set (and the best epoch on the validation set) with
    each rank beam-searching half of the 119 users; one process evaluating that checkpoint agrees."""
    single = run("TIGER", "tiny", config_dict=tiger_settings(workspace, tiny_119), nproc=1,
                 model_file=tiger_two_ranks["checkpoint"])
    assert single["world_size"] == 1 and single["epochs"] == 0
    for key in ("test_result", "best_valid_result"):
        assert set(single[key]) == set(tiger_two_ranks[key])
        for metric, value in single[key].items():
            assert tiger_two_ranks[key][metric] == pytest.approx(value, abs=1e-4), (key, metric)


@pytest.mark.slow
def test_stock_sasrec_trains_on_two_cpu_ranks(workspace, tiny_119):
    settings = common_settings(
        workspace, tiny_119, n_layers=1, n_heads=1, hidden_size=16, inner_size=32, hidden_dropout_prob=0.0,
        attn_dropout_prob=0.0, loss_type="CE", learning_rate=0.01, metrics=["Recall", "NDCG", "ItemCoverage"],
        checkpoint_dir=str(workspace / "saved_sasrec"),
    )
    result = run("SASRec", "tiny", config_dict=settings, nproc=2, port=free_port())
    assert result["world_size"] == 2 and result["epochs"] == 2
    first, second = result["train_losses"]
    assert second < first
    assert set(result["test_result"]) == {"recall@5", "ndcg@5", "itemcoverage@5"}
    assert 0 < result["test_result"]["itemcoverage@5"] <= 1  # a non-averaged metric over the gathered users
    assert os.path.isfile(result["checkpoint"])


# ============================================================================= in-process pieces
def test_backend_choice_on_cpu():
    if torch.cuda.device_count() == 0:
        assert distributed.resolve_backend(None) == ("gloo", True)
        assert distributed.resolve_backend("GLOO") == ("gloo", True)
        with pytest.raises(ValueError, match="nccl needs CUDA"):
            distributed.resolve_backend("nccl")
    with pytest.raises(ValueError, match="dist_backend must be one of"):
        distributed.resolve_backend("mpi")


def test_requested_reads_command_line_then_dict_then_files(tmp_path, monkeypatch):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("dist_backend: nccl\ndist_timeout: 60\n")
    second.write_text("dist_backend: gloo\n")
    files = [str(first), str(second)]
    monkeypatch.setattr(sys, "argv", ["prog"])
    assert distributed.requested("dist_backend", {}, files) == "gloo"  # the last file wins
    assert distributed.requested("dist_timeout", {}, files) == 60
    assert distributed.requested("dist_backend", {"dist_backend": "nccl"}, files) == "nccl"
    monkeypatch.setattr(sys, "argv", ["prog", "--dist_backend=gloo"])
    assert distributed.requested("dist_backend", {"dist_backend": "nccl"}, files) == "gloo"
    assert distributed.requested("no_such_key", {}, files) is None


def test_process_group_is_a_noop_outside_a_rank():
    config_dict = {"epochs": 1}
    with distributed.process_group(config_dict) as group:
        assert not group.enabled and group.rank == 0 and group.world_size == 1 and group.is_main
        assert group.config_dict == config_dict and not dist.is_initialized()
        with group.rank_zero_first():
            group.barrier()  # no process group: nothing to wait for


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="checks the CPU (gloo) patches")
def test_process_group_opens_gloo_and_restores_everything(monkeypatch):
    import recbole.trainer.trainer as recbole_trainer

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = (dist.init_process_group, torch.cuda.set_device, recbole_trainer.DistributedDataParallel,
              torch.get_num_threads())
    config_dict = {"local_rank": 0, "nproc": 1, "world_size": 1, "offset": 0, "ip": "localhost",
                   "port": free_port()}
    with distributed.process_group(config_dict) as group:
        assert dist.is_initialized() and dist.get_backend() == "gloo" and dist.get_world_size() == 1
        assert group.enabled and group.on_cpu and group.config_dict["gpu_id"] == "-1"
        assert "gpu_id" not in config_dict  # the caller's dict is not modified
        dist.init_process_group(backend="nccl", rank=0, world_size=1, init_method="tcp://x:1")  # RecBole's call
        with pytest.raises(RuntimeError, match="rank 1 of 2"):
            dist.init_process_group(backend="nccl", rank=1, world_size=2)
        torch.cuda.set_device(0)  # a no-op on CPU
        ddp = recbole_trainer.DistributedDataParallel(torch.nn.Linear(2, 2), device_ids=[0])
        assert ddp.device_ids is None
        graph = torch.nn.Linear(2, 2)
        graph.register_buffer("adjacency", torch.eye(3).to_sparse())  # like AlphaRec's normalised adjacency
        recbole_trainer.DistributedDataParallel(graph, device_ids=[0])  # DDP cannot broadcast it: ignored
        assert graph._ddp_params_and_buffers_to_ignore == ["adjacency"]
        with group.rank_zero_first():
            group.barrier()
    assert not dist.is_initialized()
    after = (dist.init_process_group, torch.cuda.set_device, recbole_trainer.DistributedDataParallel,
             torch.get_num_threads())
    assert after == before


def test_gathered_rows_drop_padding_repeats_and_restore_dataset_order():
    from recbole.evaluator.collector import DataStruct

    class Echo:  # stands in for RecBole's Evaluator
        def evaluate(self, struct):
            return struct.get("rec.topk")

    config_dict = {"local_rank": 0, "nproc": 1, "world_size": 1, "offset": 0, "port": free_port()}
    with distributed.process_group(config_dict):
        # positions 2, 0, 1 and a padding repeat of 2 (DistributedSampler pads shards with users from the start)
        state = distributed._ShardState(torch.tensor([2, 0, 1, 2]).numpy())
        struct = DataStruct()
        struct.set("rec.topk", torch.tensor([[20], [0], [10], [20]]))  # [4 rows, 1]
        struct.set("data.num_items", 41)
        rows = distributed._GatheringEvaluator(Echo(), state).evaluate(struct)
        assert state.merged and rows.tolist() == [[0], [10], [20]]
        unaligned = distributed._ShardState(torch.tensor([0, 1]).numpy())  # 2 users, 3 rows: not merged
        struct.set("rec.topk", torch.tensor([[0], [10], [20]]))
        distributed._GatheringEvaluator(Echo(), unaligned).evaluate(struct)
        assert not unaligned.merged


def test_sharded_evaluation_is_added_once_and_only_to_multi_process_runs():
    from recbole.utils import ModelType

    from recbole_genrec.run_builder import trainer_mixins

    config = {"MODEL_TYPE": ModelType.SEQUENTIAL, "resume_training": False}
    assert issubclass(GenerativeTrainer, distributed.ShardedEvaluation)
    assert distributed.ShardedEvaluation not in trainer_mixins(config, GenerativeTrainer, distributed=True)
    assert distributed.ShardedEvaluation in trainer_mixins(config, Trainer, distributed=True)
    assert distributed.ShardedEvaluation not in trainer_mixins(config, Trainer, distributed=False)
