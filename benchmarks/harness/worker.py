"""The body of one row's subprocess (``run.py _worker SPEC RESULT``): one ``run_recbole_genrec`` call, timed by a
wrapper of the preprocessing hook and a trainer listener (:mod:`recbole_genrec.trainer.events`); writes
``result.json`` whatever happens.

torch and recbole_genrec are imported inside :func:`run_spec`: in the row's own process, after its thread count is
set, and never in the parent that only schedules rows.
"""

import json
import resource
import sys
import time
import traceback

from benchmarks.harness.common import jsonable, say

# semantic-ID diagnostics kept in a row's result (of the hook's ``diagnostics-<key>.json``)
DIAGNOSTIC_KEYS = ("method", "collision", "codebook_sizes", "usage", "perplexity", "max_items_per_prefix",
                   "collision_rate_before", "recon_error", "n_items", "n_unique_codes",
                   "levels_after_collision_handling", "timings")


def worker(spec_path, result_path):
    """Body of one row: ``run_recbole_genrec`` with its timings recorded; writes ``result.json``."""
    t0 = time.perf_counter()
    with open(spec_path) as f:
        spec = json.load(f)
    out = {"status": "error"}
    try:
        run_spec(spec, t0, out)
    except BaseException as err:  # recorded in the row; the parent moves on
        out["error"] = f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc()[-4000:]
        print(out["traceback"], flush=True)
    finally:
        _finish(out, t0, result_path)
    return 0 if out["status"] == "ok" else 1


def run_spec(spec, t0, out):
    """Run the row of ``spec`` and record its metrics and timings into ``out``."""
    import recbole_genrec  # before torch: OpenMP reads the thread wait policy it sets when torch loads

    import torch

    from recbole_genrec.runlog import quiet_known_warnings

    quiet_known_warnings()  # as the command line: RecBole's pandas FutureWarnings stay out of the row's log

    if spec["config"].get("use_gpu") is False:
        torch.set_num_threads(int(spec["threads"]))
    from recbole_genrec.preprocess import hook

    state = {"evals": [], "trained_epoch_s": [], "trainer": None}
    hook.prepare_features = _timed_prepare(hook.prepare_features, state)
    if spec["config"].get("use_gpu") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = recbole_genrec.run_recbole_genrec(
        model=spec["model"], dataset=spec["dataset"], config_file_list=spec["config_files"] or None,
        config_dict=spec["config"], saved=True, listeners=[RowTimer(state, spec["label"], t0)]
    )
    _record(out, result, state)


# ------------------------------------------------------------------------------------------------ timing hooks
def _timed_prepare(prepare_features, state):
    """``prepare_features`` that also stores its summary and wall time in ``state["preprocess"]``."""

    def timed_prepare(config, *a, **k):
        start = time.perf_counter()
        summary = prepare_features(config, *a, **k)
        state["preprocess"] = _summarize_preprocess(summary, time.perf_counter() - start)
        return summary

    return timed_prepare


class RowTimer:
    """Trainer listener: setup time, every trained epoch and every evaluation of the row, also printed."""

    def __init__(self, state, label, t0):
        self.state, self.label, self.t0 = state, label, t0

    def trainer_built(self, trainer):
        self.state["trainer"] = trainer
        self.state["setup_s"] = time.perf_counter() - self.t0

    def epoch_trained(self, trainer, epoch_idx, seconds, loss):
        self.state["trained_epoch_s"].append(seconds)
        shown = loss if not isinstance(loss, tuple) else sum(loss)
        say(f"  {self.label}: epoch {epoch_idx + 1}/{trainer.epochs} {seconds:.1f}s loss {float(shown):.4f}")

    def evaluated(self, trainer, eval_data, seconds, result):
        users = getattr(eval_data, "sample_size", None)
        ndcg = (result or {}).get("ndcg@10")
        self.state["evals"].append({"seconds": seconds, "users": users, "epoch": len(self.state["trained_epoch_s"]),
                                    "ndcg@10": float(ndcg) if ndcg is not None else None})
        say(f"  {self.label}: evaluated {users} users in {seconds:.1f}s"
            + (f", NDCG@10 {float(ndcg):.4f}" if ndcg is not None else ""))


# ------------------------------------------------------------------------------------------------ results
def _summarize_preprocess(summary, wall):
    if summary is None:
        return None
    out = {"wall_s": round(wall, 3), "features": summary.get("features"), "cache": summary.get("cache"),
           "timings": summary.get("timings"), "n_items": summary.get("n_items"),
           "embedding_dim": summary.get("embedding_dim"), "codebook_sizes": summary.get("codebook_sizes")}
    diag = summary.get("diagnostics")
    if diag:
        out["diagnostics"] = {k: diag.get(k) for k in DIAGNOSTIC_KEYS}
    return out


def _record(out, result, state):
    """Metrics, timings and sizes of a finished row (``result``: what ``run_recbole_genrec`` returned)."""
    test_eval = state["evals"][-1] if state["evals"] else {}
    trainer = state["trainer"]
    epoch_s = state["trained_epoch_s"]
    out.update({
        "status": "ok",
        "test_result": {k: float(v) for k, v in (result.get("test_result") or {}).items()},
        "best_valid_result": {k: float(v) for k, v in (result.get("best_valid_result") or {}).items()},
        "params": result.get("params"),
        "epochs": len(epoch_s),
        # every validation (the last evaluation is the test): epochs trained so far and NDCG@10
        "valid_curve": [{"epoch": e["epoch"], "ndcg@10": e["ndcg@10"], "seconds": round(e["seconds"], 1)}
                        for e in state["evals"][:-1]],
        "train_s_per_epoch": sum(epoch_s) / len(epoch_s) if epoch_s else None,
        "train_losses": result.get("train_losses"),
        "train_s": result.get("train_seconds"),
        "setup_s": state.get("setup_s"),
        "eval_s": test_eval.get("seconds"),
        "eval_users": test_eval.get("users"),
        "eval_users_per_s": (test_eval["users"] / test_eval["seconds"]
                             if test_eval.get("users") and test_eval.get("seconds") else None),
        "preprocess": state.get("preprocess"),
        "device": str(trainer.device) if trainer is not None else None,
        "amp": bool(getattr(trainer, "use_amp", getattr(trainer, "enable_amp", False))),
    })
    if result.get("valid_history") is not None:  # a resumable row: its whole history, before any restart too
        out.update({
            "epochs": result["epochs"],
            "valid_curve": [{"epoch": v["epoch"] + 1, "ndcg@10": v["result"].get("ndcg@10"),
                             "seconds": round(v["seconds"], 1)} for v in result["valid_history"]],
            "train_s_per_epoch": result["train_seconds_per_epoch"],
            "best_epoch": best_epoch(result["valid_history"], result["valid_score_bigger"]),
        })
    stage1 = getattr(getattr(trainer, "model", None), "stage1", None)
    if stage1 is not None:  # PRORec: its stage-I report, without the per-epoch history
        report = {k: v for k, v in stage1.report.items() if k != "history"}
        out["stage1"] = {"status": getattr(stage1, "status", None), "report": jsonable(report)}


def best_epoch(valid_history, bigger):
    """The 1-based epoch of the best validation (the last of equal ones: RecBole's early stopping counts an equal
    score as an improvement and keeps those weights)."""
    if not valid_history:
        return None
    best = valid_history[0]
    for v in valid_history[1:]:
        if (v["score"] >= best["score"]) if bigger else (v["score"] <= best["score"]):
            best = v
    return best["epoch"] + 1


def _peak_rss_mib():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


def _finish(out, t0, result_path):
    """Peak memory and total time into ``out``, then ``result.json``."""
    out["peak_rss_mib"] = round(_peak_rss_mib(), 1)
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except Exception:
        pass
    out["total_s"] = round(time.perf_counter() - t0, 2)
    with open(result_path, "w") as f:
        json.dump(jsonable(out), f, indent=1)
