"""Small deterministic runs through the public entry points, written as one JSON of every metric, loss and reload score:
run it on two checkouts and compare the files byte for byte to show that a refactoring changed no result.

    python benchmarks/bitwise_runs.py OUT.json DATA_PATH   # DATA_PATH: the folder holding ml-100k/

Runs (about a minute on one core): BPR, SASRec, AlphaRec (user_uniform), TIGER, TIGER under cold start and PRORec
on tests/data/tiny; BPR and SASRec (users with >= 200 interactions) on ml-100k, one epoch; the reload
(load_data_and_model) of three of them and HyperTuning's objective_function. A fresh cache folder each time.
"""
import argparse
import json
import os
import sys
import tempfile

_parser = argparse.ArgumentParser(description="Deterministic small runs -> one JSON, to compare two checkouts.")
_parser.add_argument("out", metavar="OUT.json", help="where the results go")
_parser.add_argument("data_path", metavar="DATA_PATH", help="the folder holding ml-100k/ (e.g. ../shared/data)")
_args = _parser.parse_args()
out_path, ML = _args.out, os.path.abspath(_args.data_path)
if not os.path.isfile(os.path.join(ML, "ml-100k", "ml-100k.inter")):
    sys.exit(f"{ML} holds no ml-100k/ml-100k.inter: pass the folder that holds the ml-100k atomic files")
sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line
import torch  # noqa: E402
torch.set_num_threads(1)
import recbole_genrec  # noqa: E402,F401  (compat shims before RecBole)
from recbole_genrec import load_data_and_model, objective_function, run_recbole_genrec  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "tests", "data")
cache = tempfile.mkdtemp(prefix="rb-equiv-")
LOO = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"}
RS = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}
base = {"genrec_cache_dir": cache, "checkpoint_dir": os.path.join(cache, "saved"), "show_progress": False,
        "seed": 2020, "state": "ERROR", "genrec_count_flops": False}
tiny = dict(base, data_path=TINY, load_col={"inter": ["user_id", "item_id", "timestamp"]})
t5 = {"eval_args": LOO, "d_model": 32, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
      "num_heads": 2, "d_kv": 16, "beam_batch_size": 16, "train_batch_size": 64, "metrics": ["Recall", "NDCG"],
      "MAX_ITEM_LIST_LENGTH": 10, "dropout_rate": 0.0, "use_user_token": False, "beam_size": 8, "topk": [5],
      "valid_metric": "Recall@5", "learning_rate": 0.01, "warmup_steps": 5, "lr_scheduler": "cosine",
      "sid_method": "rkmeans", "sid_levels": 2, "sid_codebook_size": 8, "epochs": 2, "eval_step": 1}
alpha = {"eval_args": RS, "train_batch_size": 128, "neg_num": 16, "alpharec_hidden_size": 64, "epochs": 2,
         "train_sampling": "user_uniform", "topk": [5], "valid_metric": "Recall@5"}
RUNS = [
    ("tiny BPR", "BPR", "tiny", dict(tiny, epochs=2, topk=[5], valid_metric="Recall@5")),
    ("tiny SASRec", "SASRec", "tiny", dict(tiny, eval_args=LOO, epochs=2, topk=[5], valid_metric="Recall@5",
                                           MAX_ITEM_LIST_LENGTH=10)),
    ("tiny AlphaRec user_uniform", "AlphaRec", "tiny", dict(tiny, **alpha)),
    ("tiny TIGER", "TIGER", "tiny", dict(tiny, **t5)),
    ("tiny TIGER cold start", "TIGER", "tiny", dict(tiny, **t5, genrec_coldstart=True, coldstart_ratio=0.1)),
    ("tiny PRORec", "PRORec", "tiny", dict(tiny, **dict(t5, epochs=1), prorec_stage1_epochs=1, prorec_hidden_size=16,
                                             prorec_inner_size=32, prorec_n_layers=1, prorec_n_heads=1,
                                             prorec_code_levels=2, prorec_codebook_size=8, prorec_align_items=32)),
    ("ml-100k BPR", "BPR", "ml-100k", dict(base, data_path=ML, epochs=1, train_batch_size=4096)),
    ("ml-100k SASRec", "SASRec", "ml-100k", dict(base, data_path=ML, epochs=1, train_batch_size=1024,
                                                   user_inter_num_interval="[200,inf)", MAX_ITEM_LIST_LENGTH=20,
                                                   load_col={"inter": ["user_id", "item_id", "timestamp"]})),
]


def clean(result):
    keep = ("best_valid_score", "best_valid_result", "test_result", "train_losses", "coldstart", "params", "epochs")
    return {k: result[k] for k in keep if k in result}


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return x


out = {}
for label, model, dataset, config in RUNS:
    result = run_recbole_genrec(model, dataset, config_dict=config, saved=True)
    out[label] = clean(result)
    if label in ("tiny TIGER", "tiny BPR", "tiny TIGER cold start"):
        from recbole_genrec.utils import get_trainer  # the lookup every checkout has

        cfg, m, _, _, _, test = load_data_and_model(result["checkpoint"])
        trainer = get_trainer(cfg["MODEL_TYPE"], cfg["model"])(cfg, m)
        out[label]["reloaded_test"] = dict(trainer.evaluate(test, load_best_model=False))
    print(label, out[label]["test_result"], flush=True)
tuned = objective_function(config_dict=dict(tiny, model="BPR", dataset="tiny", epochs=2, topk=[5],
                                            valid_metric="Recall@5"), saved=False)
out["objective_function tiny BPR"] = {k: tuned[k] for k in ("best_valid_score", "best_valid_result", "test_result")}
with open(out_path, "w") as f:
    json.dump(jsonable(out), f, indent=1, sort_keys=True)
print("written", out_path)
