"""Benchmark presets for ``benchmarks/run.py``: which models run on which data, and with what budget.

A preset is a dict::

    {"description": str,
     "device": "cpu" | "cuda",          # default of --device
     "threads": int,                    # torch/OMP threads per worker on CPU
     "jobs": int,                       # rows run at the same time (1 = clean timings)
     "row_timeout_s": int,              # a row that runs longer is killed and recorded as "timeout"
     "total_budget_s": int | None,      # rows that would start after this are recorded as "skipped"
     "datasets": {name: {"max_users": int | None}},
     "rows": [{"model", "dataset", "protocol", "config"}, ...],
     "resume": bool,                    # optional: one report per preset that every invocation extends, rows
                                        # finished earlier are kept, not rerun (run.py --resume / --fresh)
     "plot": "valid_curves"}            # optional: validation NDCG@10 per epoch instead of quality vs time

Protocols (``PROTOCOLS``):

* ``loo`` -- leave-one-out (last item = test, second to last = valid), time-ordered, full ranking, 20-item
  histories: TIGER / DiscRec protocol, used for every sequential model (generative or not).
* ``rs`` -- per-user random 8:1:1 split, full ranking: the protocol of the general (CF) models' papers.

Rows of different protocols are not comparable with each other; the result tables group them.

Every row reports the same metrics (``METRICS`` at ``TOPK``). Generative models return ``beam_size`` (20) items per
user, so every cut-off must be <= 20.
"""

import copy

METRICS = ["Recall", "NDCG", "MRR", "Hit", "ItemCoverage"]
TOPK = [5, 10, 20]
COMMON = {
    "metrics": METRICS,
    "topk": TOPK,
    "valid_metric": "NDCG@10",
    "show_progress": False,
    "genrec_count_flops": False,  # FLOPs counting re-runs a forward pass with thop; not needed here
    "seed": 2020,
    "reproducibility": True,
}

PROTOCOLS = {
    "loo": {
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "MAX_ITEM_LIST_LENGTH": 20,
    },
    "rs": {
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "full", "group_by": "user"},
    },
}
PROTOCOL_NAMES = {"loo": "leave-one-out, history 20", "rs": "per-user random 8:1:1"}

GENERATIVE = ["TIGER", "DiscRec", "PRORec"]
SEQUENTIAL = ["SASRec", "BERT4Rec", "CollabEmbed"]
GENERAL = ["Pop", "BPR", "LightGCN", "NGCF", "AlphaRec"]
ALL_MODELS = GENERATIVE + SEQUENTIAL + GENERAL


def protocol_of(model):
    """``loo`` for sequential models (generative or not), ``rs`` for general ones."""
    return "rs" if model in GENERAL else "loo"


# ------------------------------------------------------------------------------------------- model sizes
# CPU-sized generative models: the shapes of properties/quick_start/TIGER-ml-100k.yaml (2+2 layers, width 64,
# residual k-means 2 x 64 codes + collision level), so that minutes of CPU give a non-trivial model.
SMALL_T5 = {
    "sid_method": "rkmeans", "sid_levels": 2, "sid_codebook_size": 64,
    "use_user_token": False, "d_model": 64, "d_ff": 256, "num_encoder_layers": 2, "num_decoder_layers": 2,
    "num_heads": 4, "d_kv": 16, "dropout_rate": 0.0, "beam_size": 20, "beam_batch_size": 128,
    "eval_batch_size": 512, "learning_rate": 0.003, "warmup_steps": 100, "lr_scheduler": "cosine",
}
SMALL = {
    "TIGER": dict(SMALL_T5),
    "DiscRec": dict(SMALL_T5, discrec_n_heads=2, discrec_d_ff=256),
    "PRORec": dict(SMALL_T5, prorec_code_levels=2, prorec_codebook_size=64, prorec_stage1_batch_size=128,
                   prorec_align_items=512),
    "CollabEmbed": {"collab_export": False},
}


def _epochs(n, eval_step=None, stopping_step=3, batch=None):
    """Epoch schedule: validate every ``eval_step`` epochs (default: once, after the last epoch)."""
    out = {"epochs": n, "eval_step": eval_step or n, "stopping_step": stopping_step}
    if batch:
        out["train_batch_size"] = batch
    return out


# Per-model schedules of each preset (merged over SMALL for CPU presets).
CPU_QUICK = {
    "Pop": _epochs(1),
    "BPR": _epochs(5),
    "LightGCN": _epochs(5),
    "NGCF": _epochs(3),
    "AlphaRec": _epochs(3),
    "SASRec": _epochs(3, batch=512),
    "BERT4Rec": _epochs(3, batch=512),
    "CollabEmbed": dict(_epochs(2), collab_teacher_epochs=2),
    "TIGER": dict(_epochs(1), train_batch_size=256),
    "DiscRec": dict(_epochs(1), train_batch_size=256),
    "PRORec": dict(_epochs(1), train_batch_size=256, prorec_stage1_epochs=5),
}
CPU_FULL = {
    "Pop": _epochs(1),
    "BPR": _epochs(60, 10),
    "LightGCN": _epochs(60, 10),
    "NGCF": _epochs(30, 10),
    "AlphaRec": _epochs(30, 10),
    "SASRec": _epochs(30, 5, batch=512),
    "BERT4Rec": _epochs(30, 5, batch=512),
    "CollabEmbed": dict(_epochs(10, 5), collab_teacher_epochs=15),
    "TIGER": dict(_epochs(4, 2), train_batch_size=256),
    "DiscRec": dict(_epochs(4, 2), train_batch_size=256),
    "PRORec": dict(_epochs(4, 2), train_batch_size=256, prorec_stage1_epochs=20),
}
# GPU (one H100-class GPU, 10 minutes for everything, 3 rows at a time): paper-sized T5 for the generative models,
# large batches and a fixed epoch budget; one validation at the end (beam search over 22k users is costly).
AMP = {"enable_amp": True}  # GenerativeTrainer: bf16 autocast; RecBole's Trainer: fp16 autocast (+ scaler below)
STOCK_AMP = {"enable_amp": True, "enable_scaler": True}
# The generative rows train 40 epochs (the cosine schedule spans them) and validate once at the end, then test;
# train_time_budget_s caps their training time (it stops after the epoch that crosses it, the schedule unchanged), and
# PRORec's cap leaves room for its stage I. The three run side by side on the GPU.
GEN_GPU = dict(_epochs(40, 40), train_batch_size=1024, learning_rate=0.003, warmup_steps=300,
               eval_batch_size=2048, beam_batch_size=512, **AMP)
GPU = {
    "TIGER": dict(GEN_GPU, sid_method="rkmeans", train_time_budget_s=200),
    "DiscRec": dict(GEN_GPU, sid_method="rkmeans", train_time_budget_s=200),
    "PRORec": dict(GEN_GPU, prorec_stage1_epochs=10, train_time_budget_s=160),
    "SASRec": dict(_epochs(60, 10, stopping_step=2, batch=2048), learning_rate=0.002, **STOCK_AMP),
    "BERT4Rec": dict(_epochs(60, 10, stopping_step=2, batch=2048), learning_rate=0.002, **STOCK_AMP),
    "AlphaRec": dict(_epochs(60, 10, stopping_step=2), **STOCK_AMP),
    "LightGCN": dict(_epochs(120, 20, stopping_step=2, batch=8192), learning_rate=0.002, **STOCK_AMP),
    "NGCF": dict(_epochs(60, 20, stopping_step=2, batch=8192), **STOCK_AMP),
    "BPR": dict(_epochs(120, 20, stopping_step=2, batch=8192), learning_rate=0.002, **STOCK_AMP),
}
# AlphaRec against the graph baselines (CPU, random 8:1:1, full ranking): the general models trained to early stopping on the
# validation NDCG@10 (checked every 10 epochs, 3 checks of patience; AlphaRec every 5 epochs, 4 checks = the official
# patience of 20 epochs). Baselines use RecBole's model defaults except for a larger batch / learning rate so that
# amazon-beauty converges inside the epoch cap on 2 cores; AlphaRec keeps the official optimiser settings.
ALPHAREC_CPU = {
    "Pop": _epochs(1),
    "BPR": dict(_epochs(300, 10, batch=4096), learning_rate=0.004),
    "LightGCN": dict(_epochs(250, 10, batch=4096), learning_rate=0.004),
    "NGCF": dict(_epochs(100, 10, batch=4096), learning_rate=0.002),
    "AlphaRec": _epochs(30, 5, stopping_step=4),
}
# Ablations appended to the gpu preset (row name = "<Model>[<tag>]"), with the training budget of their full model so
# that they are comparable. The first call rarely reaches them (they come last, after the 510-second budget); a second
# call `--models DiscRec,PRORec` runs those two models with their ablations.
GPU_ABLATIONS = [
    ("DiscRec", "no-collab-branch", {"discrec_collab_branch": False}),
    ("PRORec", "no-distill", {"prorec_distill": False}),
    ("PRORec", "no-align", {"prorec_lambda": 0.0}),  # stage I without the ID/text InfoNCE
    ("PRORec", "concat-codes", {"prorec_code_source": "concat"}),  # naive concatenation: semantic domination
]


# beauty-cpu: the leaderboard on FULL amazon-beauty (22,363 users, 12,101 items; leave-one-out, history 20, full
# ranking), 2 cores, one row at a time, every row trained to early stopping on validation NDCG@10. Rows resume to the
# epoch across invocations (resume_training: the state of each row lives under <cache>/<dataset>/runs/), so the
# preset is run again until every row has finished.
# SASRec: a small grid (loss, width, dropout, learning rate); the row with the best validation NDCG@10 is the tuned
# SASRec. Generative models: TIGER's recipe with a T5 of 2+2 layers, d_model 128, d_ff 512, 4 heads x 32 (about 1/4.7
# of the paper model's multiply-adds per token); codes: residual k-means 3 x 256 + TIGER's collision level. AdamW lr
# 0.002, 500 warm-up steps, cosine over 200 epochs, validation every 2 epochs, patience 5 validations.
# TIGER[paper-8ep]: the paper-size T5 (4+4 layers, d_ff 1024, 6 x 64 heads) for 8 epochs, beside TIGER[cpu-8ep] (the
# CPU size under the same 8-epoch schedule) and TIGER[cpu-8ep-bf16] (the same with bf16 autocast).
BEAUTY_T5 = {
    "sid_method": "rkmeans", "sid_levels": 3, "sid_codebook_size": 256, "sid_collision": "extra_level",
    "use_user_token": True, "d_model": 128, "d_ff": 512, "num_encoder_layers": 2, "num_decoder_layers": 2,
    "num_heads": 4, "d_kv": 32, "dropout_rate": 0.1, "beam_size": 20, "beam_batch_size": 128,
    "eval_batch_size": 1024, "train_batch_size": 256, "learning_rate": 0.002, "warmup_steps": 500,
    "lr_scheduler": "cosine", "train_length_buckets": True, "t5_lean_forward": True, "cpu_bf16": False,
    "epochs": 200, "eval_step": 2, "stopping_step": 5,
}
PAPER_T5 = {"d_ff": 1024, "num_encoder_layers": 4, "num_decoder_layers": 4, "num_heads": 6, "d_kv": 64}
EIGHT_EPOCHS = {"epochs": 8, "eval_step": 1, "stopping_step": 8}
SASREC_BEAUTY = dict(_epochs(200, 1, stopping_step=10, batch=512), hidden_size=64, inner_size=256,
                     hidden_dropout_prob=0.5, attn_dropout_prob=0.5, learning_rate=0.001, loss_type="CE",
                     train_neg_sample_args=None)
BEAUTY_CPU = {
    "SASRec": SASREC_BEAUTY,
    "BERT4Rec": dict(_epochs(300, 2, stopping_step=5, batch=512)),
    "TIGER": BEAUTY_T5,
    "DiscRec": dict(BEAUTY_T5, use_user_token=False, discrec_d_ff=512),
    "PRORec": dict(BEAUTY_T5, prorec_code_levels=3, prorec_stage1_epochs=20),
}
BEAUTY_VARIANTS = [  # (model, tag, change of BEAUTY_CPU[model])
    ("SASRec", "h128", {"hidden_size": 128, "inner_size": 512}),
    ("SASRec", "drop0.2", {"hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2}),
    ("SASRec", "lr3e-3", {"learning_rate": 0.003}),
    ("SASRec", "bpr-h128-lr5e-4", {"loss_type": "BPR", "hidden_size": 128, "inner_size": 512,
                                    "learning_rate": 0.0005, "train_neg_sample_args": {"distribution": "uniform",
                                                                                     "sample_num": 1}}),
    ("TIGER", "cpu-8ep", EIGHT_EPOCHS),
    ("TIGER", "cpu-8ep-bf16", dict(EIGHT_EPOCHS, cpu_bf16=True)),
    ("TIGER", "paper-8ep", dict(EIGHT_EPOCHS, **PAPER_T5)),
]

# RPG on beauty-cpu: properties/model/RPG.yaml is the official Beauty recipe (OPQ 32 x 256 codes, GPT-2 2 x 448, lr
# 0.01, batch 256, up to 150 epochs, validation every epoch, patience 20), trained to early stopping. Tagged rows:
# the paper's 50-item history, the protocol's 20, and the codebook ablation at history 50 (the 32-codebook row is
# hist50).
BEAUTY_RPG = [
    ("hist50", {"MAX_ITEM_LIST_LENGTH": 50}),
    ("hist20", {"MAX_ITEM_LIST_LENGTH": 20}),
    ("cb16", {"MAX_ITEM_LIST_LENGTH": 50, "sid_levels": 16}),
    ("cb8", {"MAX_ITEM_LIST_LENGTH": 50, "sid_levels": 8}),
]


def _tagged_rows(model, dataset, variants):
    return [{"model": model, "tag": tag, "dataset": dataset, "protocol": protocol_of(model), "config": dict(config)}
            for tag, config in variants]


def _rows(models, datasets, schedule, small=False, extra=None):
    """Model-major order (each model on every dataset in turn): a budget cut drops whole models, not a dataset."""
    rows = []
    for model in models:
        for dataset in datasets:
            config = {}
            if small:
                config.update(copy.deepcopy(SMALL.get(model, {})))
            config.update(copy.deepcopy(schedule.get(model, {})))
            config.update(copy.deepcopy((extra or {}).get(model, {})))
            rows.append({"model": model, "dataset": dataset, "protocol": protocol_of(model), "config": config})
    return rows


def _ablation_rows(dataset, schedule):
    rows = []
    for model, tag, change in GPU_ABLATIONS:
        config = dict(copy.deepcopy(schedule[model]), **change)
        rows.append({"model": model, "tag": tag, "dataset": dataset, "protocol": protocol_of(model), "config": config})
    return rows


def _beauty_rows():
    """The order rows run in: the first SASRec settings (the baseline everything is compared with), RPG at the paper's
    history, the 8-epoch fp32 / bf16 TIGER pair (it decides the CPU precision), TIGER to early stopping, the rest of
    the SASRec grid, then the other rows."""
    base = {r["model"]: r for r in _rows(["SASRec", "TIGER", "DiscRec", "PRORec", "BERT4Rec"], ["amazon-beauty"],
                                         BEAUTY_CPU)}
    tagged = {}
    for model, tag, change in BEAUTY_VARIANTS:
        row = copy.deepcopy(base[model])
        row["config"].update(copy.deepcopy(change))
        tagged[f"{model}[{tag}]"] = dict(row, tag=tag)
    for row in _tagged_rows("RPG", "amazon-beauty", BEAUTY_RPG):
        tagged[f"RPG[{row['tag']}]"] = row
    order = ["SASRec", "SASRec[lr3e-3]", "RPG[hist50]", "TIGER[cpu-8ep]", "TIGER[cpu-8ep-bf16]", "TIGER",
             "SASRec[h128]", "SASRec[drop0.2]", "SASRec[bpr-h128-lr5e-4]", "RPG[hist20]", "DiscRec", "PRORec",
             "BERT4Rec", "TIGER[paper-8ep]", "RPG[cb16]", "RPG[cb8]"]
    rows = dict(base, **tagged)
    return [rows[label] for label in order]


def build_presets():
    """``{name: preset}`` (see the module docstring)."""
    quick_order = ["Pop", "BPR", "LightGCN", "NGCF", "AlphaRec", "SASRec", "BERT4Rec", "CollabEmbed",
                   "TIGER", "DiscRec", "PRORec"]
    gpu_order = ["TIGER", "DiscRec", "PRORec", "SASRec", "BERT4Rec", "AlphaRec", "LightGCN", "NGCF", "BPR"]
    return {
        "smoke": {
            "description": "machinery check on tests/data/tiny (Pop and BPR, seconds)",
            "device": "cpu", "threads": 1, "jobs": 2, "row_timeout_s": 120, "total_budget_s": None,
            "datasets": {"tiny": {"max_users": None}},
            "rows": _rows(["Pop", "BPR"], ["tiny"], {"Pop": _epochs(1), "BPR": _epochs(2, 2)}),
        },
        "cpu-quick": {
            "description": "regression check: every model on ml-100k (first 200 users) and amazon-beauty (first 300 "
                           "users), CPU-sized models, 1-5 epochs, 1 thread per row (the CPU is shared); "
                           "< 30 minutes in all",
            "device": "cpu", "threads": 1, "jobs": 1, "row_timeout_s": 240, "total_budget_s": 28 * 60,
            "datasets": {"ml-100k": {"max_users": 200}, "amazon-beauty": {"max_users": 300}},
            "rows": _rows(quick_order, ["ml-100k", "amazon-beauty"], CPU_QUICK, small=True),
        },
        "cpu-full": {
            "description": "every model on full ml-100k and amazon-beauty (5,000 users), CPU-sized generative models; "
                           "about 2 hours on 2 cores",
            "device": "cpu", "threads": 2, "jobs": 1, "row_timeout_s": 1200, "total_budget_s": 125 * 60,
            "datasets": {"ml-100k": {"max_users": None}, "amazon-beauty": {"max_users": 5000}},
            "rows": _rows(quick_order, ["ml-100k", "amazon-beauty"], CPU_FULL, small=True),
        },
        "alpharec": {
            "description": "AlphaRec vs LightGCN, NGCF, BPR and Pop on full ml-100k and "
                           "amazon-beauty, per-user random 8:1:1, full ranking, early stopping on valid NDCG@10; "
                           "2 rows at a time, 1 thread each; about 75 minutes on 2 cores",
            "device": "cpu", "threads": 1, "jobs": 2, "row_timeout_s": 50 * 60, "total_budget_s": 110 * 60,
            "datasets": {"ml-100k": {"max_users": None}, "amazon-beauty": {"max_users": None}},
            "rows": _rows(["AlphaRec", "NGCF", "LightGCN", "BPR", "Pop"], ["ml-100k", "amazon-beauty"],
                          ALPHAREC_CPU),
        },
        "beauty-cpu": {
            "description": "leaderboard on full amazon-beauty, leave-one-out, history 20, full ranking: a SASRec grid, "
                           "RPG (history 50 and 20, 8 / 16 / 32 codebooks), BERT4Rec, TIGER, DiscRec and PRORec "
                           "(2+2-layer T5, d_model 128) trained to early stopping, and 8-epoch TIGER rows (CPU size "
                           "fp32 / bf16, paper size); 2 threads, one row at a time; every row resumes to the epoch, so "
                           "invoke it again until all rows have finished",
            "device": "cpu", "threads": 2, "jobs": 1, "row_timeout_s": 7 * 24 * 3600, "total_budget_s": None,
            "datasets": {"amazon-beauty": {"max_users": None}},
            "rows": _beauty_rows(),
            "resume": True, "resume_rows": True, "plot": "valid_curves",
        },
        "gpu": {
            "description": "amazon-beauty on one H100-class GPU within 10 minutes: generative + sequential models with "
                           "leave-one-out (history 20), general models with a per-user random 8:1:1 split; "
                           "bf16 autocast; 3 rows at a time",
            "device": "cuda", "threads": 4, "jobs": 3, "row_timeout_s": 420, "total_budget_s": 510,
            "datasets": {"amazon-beauty": {"max_users": None}},
            "rows": _rows(gpu_order, ["amazon-beauty"], GPU) + _ablation_rows("amazon-beauty", GPU),
        },
    }


PRESETS = build_presets()
# Presets that call the existing stand-alone benchmarks instead of training models.
SCRIPT_PRESETS = {
    "decoding": ("decoding_bench.py", {"cpu": ["--n-users", "64", "--batch-size", "8", "32", "64", "--threads", "2"],
                                       "cuda": ["--n-users", "512", "--batch-size", "32", "128", "512"]}),
    "tokenizers": ("tokenizers_bench.py", {"cpu": ["--n", "200000", "--no-progress"],
                                           "cuda": ["--n", "1000000", "--no-progress"]}),
}
