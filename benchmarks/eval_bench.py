"""Full-ranking evaluation time, side by side on the same users, items and scores:

- ``recbole``:  RecBole's ``Trainer.evaluate`` (``eval_batch_size // n_items`` users per batch)
- ``fast``:     ``recbole_genrec.trainer.fast_eval`` (what ``trainer.evaluate`` runs for a general model)
- ``official``: the official AlphaRec evaluator (LehengTHU/AlphaRec ``ProxyEvaluator`` -> C++
  ``UniEvaluator``, top_k [20], batch 1024, its six metrics), built locally outside this repository:

      git clone https://github.com/LehengTHU/AlphaRec /tmp/alpharec-official   # or any copy of its models/
      pip install --target /tmp/cython-site Cython
      cd /tmp/alpharec-official/models/General/base && PYTHONPATH=/tmp/cython-site python setup.py build_ext --inplace

  and passed as ``--official /tmp/alpharec-official`` (the folder that holds ``models/``). Its
  ``np.reshape(..., newshape=...)`` calls are given to numpy 2.4 as ``shape`` (no other change).

One AlphaRec (default config, seeded initial weights; the evaluation cost does not depend on how
trained the weights are) on each dataset's per-user random 8:1:1 split; the test split is ranked
over all items with each user's training and validation items masked, in all three. The official
evaluator gets the same cached user/item factors (its own ``predict`` would also re-run the graph
propagation for every batch of 1024 users; that is left out in its favour). Item ids are shifted by
one for it (it has no padding item). Each repeat times the three in turn; the table has medians.

    nice -n 10 python benchmarks/eval_bench.py --datasets ml-100k,amazon-beauty --official /tmp/alpharec-official
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # this checkout's recbole_genrec


def load_official(folder):
    """``ProxyEvaluator`` of the official code in ``folder`` without running its package ``__init__``s
    (they import the models and their training dependencies)."""
    sys.path.insert(0, folder)
    for name in ("models", "models.General", "models.General.base"):
        module = types.ModuleType(name)
        module.__path__ = [os.path.join(folder, *name.split("."))]
        sys.modules[name] = module
    from models.General.base.evaluator.backend.cpp import uni_evaluator
    from models.General.base.evaluator.proxy_evaluator import ProxyEvaluator

    uni_evaluator.np = _NumpyNewshape()  # it calls np.reshape(..., newshape=...), gone in numpy 2.4
    return ProxyEvaluator


class _NumpyNewshape:
    """numpy, with ``reshape(a, newshape=...)`` accepted as older numpy did."""

    def __getattr__(self, name):
        import numpy

        return getattr(numpy, name)

    @staticmethod
    def reshape(a, *args, newshape=None, **kwargs):
        import numpy

        return numpy.reshape(a, newshape, **kwargs) if newshape is not None else numpy.reshape(a, *args, **kwargs)


class OfficialAdapter:
    """The interface the official evaluator calls: ``predict(users, None) -> [B, n_items - 1]`` numpy."""

    def __init__(self, user_e, item_e):
        self.user_e, self.item_t = user_e, item_e[1:].t().contiguous()

    def predict(self, users, items=None):
        import torch

        with torch.no_grad():
            return (self.user_e[torch.as_tensor(users)] @ self.item_t).numpy()


def bench_dataset(dataset_name, args, ProxyEvaluator):
    import numpy as np
    import torch
    from recbole.trainer import Trainer
    from recbole_genrec import Config
    from recbole_genrec.run_builder import prepare, trainer_class
    from recbole_genrec.trainer import fast_eval
    from recbole_genrec.utils import get_model

    config = Config(model="AlphaRec", dataset=dataset_name,
                    config_file_list=[os.path.join(ROOT, "properties", "protocol", "random-8-1-1.yaml")],
                    config_dict={"data_path": args.data_path, "state": "ERROR", "show_progress": False,
                                 "genrec_count_flops": False, "topk": [20]})
    dataset, train, valid, test, _ = prepare(config)
    torch.manual_seed(0)
    model = get_model("AlphaRec")(config, train._dataset)
    trainer = trainer_class(config)(config, model)
    trainer.eval_collector.data_collect(train)
    model.eval()
    user_e, item_e = model.full_sort_factors()
    uids = test.uid_list.numpy()
    n_items = test._dataset.item_num
    row = {"dataset": dataset_name, "users": int(len(uids)), "items": int(n_items - 1),
           "recbole_users_per_batch": int(max(config["eval_batch_size"] // n_items, 1))}
    official = None
    if ProxyEvaluator is not None:
        train_dict = {int(u): (test.uid2history_item[u] - 1).tolist() for u in uids}  # train + valid items
        test_dict = {int(u): (test.uid2positive_item[u] - 1).tolist() for u in uids}
        official = ProxyEvaluator(None, train_dict, test_dict, top_k=[20], num_thread=args.official_threads)
        adapter = OfficialAdapter(user_e, item_e)
    times = {"recbole": [], "fast": [], "fast_core": [], "official": []}
    for repeat in range(args.repeats):
        start = time.perf_counter()
        slow = Trainer.evaluate(trainer, test, load_best_model=False)
        times["recbole"].append(time.perf_counter() - start)
        start = time.perf_counter()
        fast = trainer.evaluate(test, load_best_model=False)
        times["fast"].append(time.perf_counter() - start)
        user_e, item_e = model.full_sort_factors()  # the factors the official evaluator gets, outside its timing
        start = time.perf_counter()
        fast_eval.fast_full_sort_collect(trainer.eval_collector, test, user_e, item_e)
        trainer.eval_collector.model_collect(model)
        core = trainer.evaluator.evaluate(trainer.eval_collector.get_data_struct())
        times["fast_core"].append(time.perf_counter() - start)
        assert dict(core) == dict(fast)
        if official is not None:
            start = time.perf_counter()
            ret, _ = official.evaluate(adapter)
            times["official"].append(time.perf_counter() - start)
        print(f"[eval-bench] {dataset_name} repeat {repeat + 1}: " +
              ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items() if v), flush=True)
    row.update({f"{k}_s": statistics.median(v) for k, v in times.items() if v})
    row["times"] = times
    row["recbole_metrics"], row["fast_metrics"] = dict(slow), dict(fast)
    row["identical_metrics"] = dict(slow) == dict(fast)
    if official is not None:  # ret: Precision, Recall, MAP, NDCG, MRR, HR at k = 20
        row["official_metrics"] = {"recall@20": float(ret[1]), "ndcg@20": float(ret[3])}
        row["fast_vs_official"] = row["fast_core_s"] / row["official_s"]
    row["recbole_vs_fast"] = row["recbole_s"] / row["fast_s"]
    return row


def markdown(report):
    lines = [f"# Full-ranking evaluation time -- {report['started']}", "", report["description"], "",
             f"- command: `{report['command']}`", f"- git commit: {report['git']}", f"- machine: {report['machine']}",
             "", "Columns: `RecBole s` = `Trainer.evaluate` and `fast s` = our `trainer.evaluate`, both including the "
             "model's forward pass (propagation) and, for fast, the factor check; `fast core s` = the fast scoring + "
             "top-k + RecBole's metrics from given factors, and `official s` = the official evaluator from the same "
             "factors: `fast core / official` is the like-for-like ratio.", "",
             "| dataset | users | items | RecBole s | fast s | fast core s | official s | fast core / official | "
             "RecBole / fast | identical to RecBole | R@20 / N@20 (fast) | R@20 / N@20 (official) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for row in report["rows"]:
        fm, om = row["fast_metrics"], row.get("official_metrics", {})
        lines.append("| " + " | ".join([
            row["dataset"], f"{row['users']:,}", f"{row['items']:,}", f"{row['recbole_s']:.2f}", f"{row['fast_s']:.2f}",
            f"{row['fast_core_s']:.2f}",
            f"{row['official_s']:.2f}" if "official_s" in row else "",
            f"{row['fast_vs_official']:.2f}x" if "fast_vs_official" in row else "", f"{row['recbole_vs_fast']:.1f}x",
            "yes" if row["identical_metrics"] else "NO",
            f"{fm['recall@20']:.4f} / {fm['ndcg@20']:.4f}",
            f"{om['recall@20']:.4f} / {om['ndcg@20']:.4f}" if om else ""]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ml-100k")
    parser.add_argument("--official", default=None, help="folder holding the official code's built models/")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (RecBole and fast)")
    parser.add_argument("--official-threads", type=int, default=1, help="C++ threads of the official evaluator")
    parser.add_argument("--data-path", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--out", default=None, help="output stem (default benchmarks/results/eval-<date>)")
    args = parser.parse_args(argv)
    import torch

    import recbole_genrec  # noqa: F401  (compat shims before RecBole)

    torch.set_num_threads(args.threads)
    ProxyEvaluator = load_official(os.path.abspath(args.official)) if args.official else None
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "git": git,
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), torch threads {args.threads}, official "
                   f"C++ threads {args.official_threads}, load average at start {os.getloadavg()}",
        "description": "Test split of a per-user random 8:1:1 split, ranked over all items with each user's training "
                       "and validation items masked; same AlphaRec factors for all three; medians of "
                       f"{args.repeats} interleaved repeats. RecBole = Trainer.evaluate, fast = "
                       "recbole_genrec.trainer.fast_eval, official = LehengTHU/AlphaRec ProxyEvaluator (C++).",
        "rows": [],
    }
    stem = args.out or os.path.join(HERE, "results", f"eval-{time.strftime('%Y-%m-%d_%H%M')}")
    for name in args.datasets.split(","):
        report["rows"].append(bench_dataset(name, args, ProxyEvaluator))
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        with open(stem + ".json", "w") as f:
            json.dump(report, f, indent=1, default=float)
        with open(stem + ".md", "w") as f:
            f.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
