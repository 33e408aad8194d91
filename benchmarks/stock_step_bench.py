# coding: utf-8
"""A stock RecBole model's training step through the plugin's entry point against the same ops run bare.

SASRec on amazon-beauty (leave-one-out, history 20, CE over every item, batch 512, 1 thread by default). Loops, one
step of each in turn so that they share the machine's load, each on its own copy of the same weights and the same
batches:

* ``entry point`` -- the trainer ``run_recbole_genrec`` builds (``run_builder.trainer_class``: RecBole's ``Trainer``
  with the plugin's mixins), one ``_train_epoch`` call per batch;
* ``bare``        -- ``model.calculate_loss(batch).backward(); optimizer.step()``, nothing else;
* ``bare+anomaly``-- the same under ``torch.autograd.detect_anomaly()``: what every step cost while RecBole's
  ``sine.py`` left anomaly mode on.

Reported: CPU seconds of the process per step (``time.process_time``; robust to other jobs on the machine), the
median over rounds, and each loop's ratio to ``bare``.

    python benchmarks/stock_step_bench.py --rounds 10
"""

import argparse
import copy
import datetime
import itertools
import json
import os
import shlex
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import recbole_genrec  # noqa: E402,F401  (before torch: the thread wait policy)
import torch  # noqa: E402

from machine import cpu_name, git_commit, library_versions, load_average  # noqa: E402

LOOPS = ["entry point", "bare", "bare+anomaly"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", default=os.path.join(os.path.dirname(HERE), "..", "shared", "data"))
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    return p.parse_args(argv)


def build(args):
    """Config, model and the first ``rounds + 1`` training batches, through the plugin's own data path."""
    from recbole_genrec import Config, run_builder

    settings = {"data_path": args.data_path, "train_batch_size": args.batch_size, "loss_type": "CE",
                "train_neg_sample_args": None, "MAX_ITEM_LIST_LENGTH": 20, "show_progress": False, "state": "ERROR",
                "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "checkpoint_dir": "/tmp/stock-step-bench"}
    config = Config(model="SASRec", dataset=args.dataset, config_dict=settings)
    data = run_builder.prepare(config)
    batches = list(itertools.islice(iter(data.train), args.rounds + 1))
    return config, run_builder.build_model(config, data), batches


def main(argv=None):
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", os.path.relpath(__file__)] + (sys.argv[1:] if argv is None
                                                                                        else argv))
    if not os.path.isdir(os.path.join(args.data_path, args.dataset)):
        print(f"{args.dataset} not found under {args.data_path} (the shared datasets); pass --data-path",
              file=sys.stderr)
        return 2
    sys.argv = sys.argv[:1]  # RecBole reads --key=value options from the command line
    torch.set_num_threads(args.threads)
    from recbole_genrec.run_builder import trainer_class

    config, model, batches = build(args)
    models = {name: copy.deepcopy(model) for name in LOOPS}
    trainer = trainer_class(config)(config, models["entry point"])
    optimizers = {name: torch.optim.Adam(models[name].parameters(), lr=config["learning_rate"])
                  for name in ("bare", "bare+anomaly")}

    def bare(name, batch):
        optimizers[name].zero_grad()
        models[name].calculate_loss(batch).backward()
        optimizers[name].step()

    steps = {
        "entry point": lambda batch: trainer._train_epoch([batch], 0),
        "bare": lambda batch: bare("bare", batch),
        "bare+anomaly": lambda batch: _with_anomaly(lambda: bare("bare+anomaly", batch)),
    }
    seconds = {name: [] for name in LOOPS}
    for round_, batch in enumerate(batches):
        for name in LOOPS:
            start = time.process_time()
            steps[name](batch)
            if round_ > 0:  # the first round warms up
                seconds[name].append(time.process_time() - start)
    medians = {name: statistics.median(v) for name, v in seconds.items()}
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "git_commit": git_commit(), "cpu": cpu_name(), "load_average": load_average(),
        "versions": library_versions(), "threads": args.threads, "batch_size": args.batch_size,
        "rounds": args.rounds, "anomaly_mode_after_lookup": torch.is_anomaly_enabled(),
        "cpu_s_per_step": seconds, "median_cpu_s_per_step": medians,
        "ratio_to_bare": {name: medians[name] / medians["bare"] for name in LOOPS},
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"stock-step-{datetime.date.today():%Y-%m-%d}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    lines = [f"# SASRec training step: entry point vs bare ops ({report['date']})", "",
             f"`{report['command']}` -- {report['cpu']}, {args.threads} thread(s), batch {args.batch_size}, "
             f"{args.rounds} rounds, load average at the end {report['load_average']}, commit {report['git_commit']}",
             "", "| loop | median CPU s / step | vs bare |", "|---|---:|---:|"]
    lines += [f"| {name} | {medians[name]:.3f} | {report['ratio_to_bare'][name]:.2f}x |" for name in LOOPS]
    lines += ["", f"Anomaly mode after looking up SASRec: {report['anomaly_mode_after_lookup']}."]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _with_anomaly(fn):
    with torch.autograd.detect_anomaly(check_nan=True):
        fn()


if __name__ == "__main__":
    sys.exit(main())
