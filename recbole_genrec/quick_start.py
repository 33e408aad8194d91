"""Entry points that mirror ``recbole.quick_start`` with the plugin's lookups.

``run_recbole_genrec`` trains and tests one model; ``run`` adds RecBole's multi-process path;
``run_side_by_side`` trains several models on one dataset/split and writes one comparison
table under one shared protocol; ``objective_function`` serves RecBole's ``HyperTuning``;
``load_data_and_model`` rebuilds a saved run from the checkpoint alone (generative checkpoints carry their
code table). Every trainer here writes plain-data checkpoints and reads checkpoints as data
(:mod:`recbole_genrec.checkpoint`).
"""

import logging
import os
import sys
import time
from logging import getLogger

from recbole.data.transform import construct_transform
from recbole.utils import calculate_valid_score, dict2str, get_environment, get_flops, init_logger, set_color

from recbole_genrec import threads
from recbole_genrec.checkpoint import check_checkpoint_model, load_checkpoint, load_weights, restore_config
from recbole_genrec.config import Config
from recbole_genrec.data import coldstart
from recbole_genrec.distributed import process_group
from recbole_genrec.report import hyperparameters
from recbole_genrec.run_builder import build, build_model, build_trainer, item_tokens, prepare
from recbole_genrec.runlog import FILE_ONLY, init_run_logger
from recbole_genrec.errors import ConfigError
from recbole_genrec.validation import check_config, time_ordered

# What a side-by-side run shares between its rows: the split, the history length and the evaluation.
PROTOCOL_KEYS = ("eval_args", "MAX_ITEM_LIST_LENGTH", "metrics", "topk", "valid_metric", "load_col", "seed")


def run_recbole_genrec(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, queue=None,
                       model_file=None, listeners=()):
    r"""Train and test one model, exactly like ``recbole.quick_start.run_recbole``.

    Returns a dict with ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``,
    ``test_result`` and, in addition, ``model``, ``dataset``, ``params``, ``train_losses`` (one per
    epoch; this rank's shard in a multi-process run), ``train_seconds_per_epoch``, ``train_seconds`` (the fit's
    wall-clock; with ``resume_training``: the training and validation seconds of every epoch, summed over restarts),
    ``epochs``, ``checkpoint`` and ``world_size``.

    ``model_file``: evaluate this checkpoint (of the same model and config) on the validation and test
    sets instead of training. With ``local_rank`` in ``config_dict`` this is one rank of a multi-process
    run (see :func:`run` and :mod:`recbole_genrec.distributed`): rank 0 builds the preprocessing caches
    while the others wait, every rank evaluates its shard of the users and all get the metrics of all users.
    ``listeners``: objects told when the trainer is built, an epoch trained and an evaluation done
    (:mod:`recbole_genrec.trainer.events`).
    """
    with process_group(config_dict, config_file_list) as group:
        config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                        config_dict=group.config_dict)
        group.adopt(config)
        check_config(config)
        threads.configure(config)  # cpu_threads, else OMP_NUM_THREADS / the CPUs this process may use
        if model_file is not None:  # refuse a checkpoint that is not data, or of another model, before any work
            check_checkpoint_model(load_checkpoint(model_file, bool(config["trust_checkpoint"])), model_file,
                                   config["model"])
        # RecBole's ensure_dir (exists-then-makedirs) races when ranks start together: create first.
        for folder in (os.path.join("log", config["model"]), config["checkpoint_dir"]):
            os.makedirs(folder, exist_ok=True)
        init_run_logger(config)  # RecBole's init_logger; the config dump below goes to the log file only
        logger = getLogger()
        logger.info(sys.argv, extra=FILE_ONLY)
        logger.info(config, extra=FILE_ONLY)

        data = prepare(config, group)
        dataset, train_data, valid_data, test_data, cold_info = data
        logger.info(dataset)

        model = build_model(config, data, group)
        logger.info(model, extra=FILE_ONLY)  # the module tree (a T5 fills screens)
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(set_color(config["model"], "blue") + f": {n_params:,} trainable parameters (modules: log file)")
        if config["genrec_count_flops"]:
            transform = construct_transform(config)
            flops = get_flops(model, dataset, config["device"], logger, transform)
            logger.info(set_color("FLOPs", "blue") + f": {flops}")

        trainer = build_trainer(config, model, data, group, listeners)
        start = time.perf_counter()
        if model_file is None:
            best_valid_score, best_valid_result = trainer.fit(
                train_data, valid_data, saved=saved, show_progress=config["show_progress"]
            )
        else:
            trainer.eval_collector.data_collect(train_data)  # what fit collects for ItemCoverage, GiniIndex, ...
            best_valid_result = trainer.evaluate(valid_data, model_file=model_file,
                                                 show_progress=config["show_progress"])
            best_valid_score = calculate_valid_score(best_valid_result, config["valid_metric"].lower())
        train_seconds = time.perf_counter() - start
        group.barrier()  # rank 0 has finished writing the best checkpoint before any rank reads it
        load = saved or model_file is not None
        test_result = trainer.evaluate(test_data, load_best_model=load, model_file=model_file,
                                       show_progress=config["show_progress"])

        cold_report = coldstart.report(model, dataset, test_data, cold_info,
                                       places=config["metric_decimal_place"]) if cold_info is not None else None

        logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
        logger.info(set_color("best valid ", "yellow") + f": {dict2str(best_valid_result)}")
        logger.info(set_color("test result", "yellow") + f": {dict2str(test_result)}")

        history = getattr(trainer, "genrec_history", None)  # a resumed run: every epoch, before the restart too
        if history:  # every restart's training and validation seconds, not only this process's
            train_seconds = history["train_seconds"] + sum(v["seconds"] for v in history["valid"])
        epochs = [e["seconds"] for e in history["train"]] if history else trainer.genrec_epoch_seconds
        losses = [trainer.train_loss_dict[e] for e in sorted(trainer.train_loss_dict)]
        result = {
            "model": config["model"],
            "dataset": config["dataset"],
            "best_valid_score": best_valid_score,
            "valid_score_bigger": config["valid_metric_bigger"],
            "best_valid_result": best_valid_result,
            "test_result": test_result,
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "epochs": len(epochs),
            "train_losses": [float(loss) for loss in losses],
            "train_seconds": train_seconds,
            "train_seconds_per_epoch": sum(epochs) / max(len(epochs), 1),
            "checkpoint": model_file if model_file is not None else (trainer.saved_model_file if saved else None),
            "world_size": group.world_size,
            "protocol": {key: config[key] for key in PROTOCOL_KEYS},
            "settings": hyperparameters(config),  # the side-by-side table lists those that differ between rows
        }
        if history:
            result["valid_history"] = history["valid"]
        if cold_report is not None:
            result["coldstart"] = cold_report
    if group.is_main and queue is not None:
        queue.put(result)
    return result


def run_recbole_genrecs(rank, *args):
    """``mp.spawn`` target: one rank (``local_rank = rank``) of a multi-process run."""
    kwargs = dict(args[-1])
    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    run_recbole_genrec(*args[:3], **kwargs)


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, nproc=1, world_size=-1,
        ip="localhost", port="5678", group_offset=0, model_file=None):
    """Single process, or RecBole's spawn + DistributedDataParallel path when ``nproc > 1`` or ``world_size > 0``.

    Spawns ``nproc`` ranks on this machine with global ranks ``group_offset .. group_offset + nproc - 1`` of
    ``world_size`` (default ``nproc``), meeting at ``tcp://ip:port``; the backend is ``dist_backend`` (``nccl`` |
    ``gloo``) or, when unset, NCCL with GPUs and Gloo (on CPU) without (:mod:`recbole_genrec.distributed`).
    Returns the result dict of rank 0 (``None`` on a machine whose group does not hold rank 0).
    ``model_file``: evaluate a checkpoint instead of training (see :func:`run_recbole_genrec`).
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_genrec(model, dataset, config_file_list, config_dict, saved, model_file=model_file)
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset})
    kwargs = {"config_dict": config_dict, "queue": queue, "saved": saved, "model_file": model_file}
    mp.spawn(run_recbole_genrecs, args=(model, dataset, config_file_list, kwargs), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def check_shared_protocol(models, dataset, config_file_list, config_dict, protocol):
    """Every row of a side-by-side run (``--model=A,B``) can run under the shared ``protocol`` (the first model's):
    checked for all rows before the first one trains, each problem named with its row and the fix."""
    from recbole.utils import ModelType

    first = models[0]
    for name in models:
        settings = dict(config_dict or {})
        settings.update(protocol)
        config = Config(name, dataset, config_file_list, settings)
        if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and not time_ordered(config):
            order = (protocol.get("eval_args") or {}).get("order")
            raise ConfigError(
                f"side-by-side rows share the protocol of the first model, {first} (eval_args order {order!r}), but "
                f"{name} is a sequential model, which needs the time order 'TO'. Put a sequential model first "
                f"(--model={','.join([name] + [m for m in models if m != name])}), or give every row a time-ordered "
                f"protocol (--config_files=properties/protocol/leave-one-out-20.yaml)")
        try:
            check_config(config)
        except ConfigError as err:
            raise ConfigError(f"side-by-side row {name}, under the protocol shared with {first}: {err}") from None


def shared_protocol(models, dataset, config_file_list=None, config_dict=None):
    """The protocol every row of a side-by-side run uses: :data:`PROTOCOL_KEYS` of the first model's config.

    That config holds the user's settings (config files, ``config_dict``), a protocol file, the first model's
    preset and the dataset's yaml, so every other model gets the same split, history length, metrics, topk
    and valid metric instead of its own defaults; only model hyperparameters differ between rows.
    """
    config = Config(models[0], dataset, config_file_list, config_dict)
    return {key: config[key] for key in PROTOCOL_KEYS if config[key] is not None}, config


def run_side_by_side(models, dataset, config_file_list=None, config_dict=None, saved=True, results_dir=None):
    """Train each model in turn on one dataset and split; print and write one comparison table.

    Every row shares the protocol of :func:`shared_protocol` (listed under the table). Returns
    ``(results, paths)``: the per-model result dicts and the written CSV/JSON/Markdown files.
    """
    from recbole_genrec.report import comparison_table, write_comparison

    protocol, first = shared_protocol(models, dataset, config_file_list, config_dict)
    check_shared_protocol(models, dataset, config_file_list, config_dict, protocol)  # every row, before any trains
    getLogger().info(f"side-by-side protocol shared by {', '.join(models)}: {protocol}")
    results = []
    for name in models:
        run_dict = dict(config_dict or {})
        run_dict.update(protocol)
        results.append(run_recbole_genrec(name, dataset, config_file_list, run_dict, saved))
    table = comparison_table(results, protocol)
    print(table)
    folder = results_dir or first["results_dir"]
    paths = write_comparison(results, folder, dataset, protocol)
    getLogger().info(f"comparison written to {', '.join(paths)}")
    return results, paths


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """The objective for RecBole's ``HyperTuning`` (same contract as RecBole's)."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    check_config(config)
    threads.configure(config)
    logging.basicConfig(level=logging.ERROR)
    data = prepare(config)
    model_name = config["model"]
    model, trainer = build(config, data)
    train_data, valid_data, test_data = data.train, data.valid, data.test
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, verbose=False, saved=saved)
    test_result = trainer.evaluate(test_data, load_best_model=saved)
    return {
        "model": model_name,
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }


def _changed_items(saved, current):
    """``(added, removed)`` item tokens between a checkpoint's vocabulary and the dataset's (no ``[PAD]``)."""
    saved_set, current_set = set(saved), set(current)
    return [t for t in current if t not in saved_set], [t for t in saved if t not in current_set]


def check_items(model_file, config, saved_tokens, current_tokens, source):
    """Raise ``ValueError`` saying what changed when the dataset's items differ from the checkpoint's."""
    saved, current = [t for t in saved_tokens if t != "[PAD]"], [t for t in current_tokens if t != "[PAD]"]
    if saved == current:
        return
    added, removed = _changed_items(saved, current)
    change = (f"{len(added)} items added (e.g. {added[:3]}) and {len(removed)} removed (e.g. {removed[:3]})"
              if added or removed else "the same items in another id order")
    raise ValueError(
        f"checkpoint {model_file} was trained on {len(saved)} items of '{config['dataset']}', but {source} now has "
        f"{len(current)}: {change}. Its item table (and code table) no longer matches the data. Rebuild: retrain "
        f"on the current files (python run_recbole_genrec.py --model={config['model']} --dataset={config['dataset']}),"
        f" or restore the atomic files the checkpoint was trained on."
    )


def _items_before_building(config):
    """The items the preprocessing hook would keep (RecBole's filter pass, cached), without building features."""
    from recbole_genrec.data import resolve_data_path
    from recbole_genrec.preprocess import cache, hook
    from recbole_genrec.store import store_dir

    if not hook.requested_features(config):
        return None, None
    source = config["genrec_source_data_path"] or config["data_path"]
    if not os.path.isdir(source):
        config["data_path"] = source
        resolve_data_path(config)
        source = config["data_path"]
    store = store_dir(config)
    with cache.locked(store):
        tokens = hook.surviving_item_tokens(config, source, store, {"cache": {}, "timings": {}})
    return tokens, source


def load_data_and_model(model_file, trust_checkpoint=False, data_path=None):
    """Rebuild ``(config, model, dataset, train_data, valid_data, test_data)`` from a checkpoint.

    Mirrors ``recbole.quick_start.load_data_and_model``. The checkpoint is read as data
    (:func:`recbole_genrec.checkpoint.load_checkpoint`; ``trust_checkpoint=True`` is the opt-in for files that
    are not, which runs their code). Its config already points at the preprocessing cache, so no text is
    re-encoded when that is intact; the weights, and with them a generative model's code table, come from the
    checkpoint. When the dataset's items no longer match the checkpoint's vocabulary, a ``ValueError`` says
    how many were added and removed, before any feature is rebuilt. ``data_path`` (the folder holding
    ``<dataset>/``) is the caller's, as are ``trust_checkpoint`` and every file setting: see
    :func:`recbole_genrec.checkpoint.restore_config`.
    """
    checkpoint = load_checkpoint(model_file, trust_checkpoint)
    config = restore_config(checkpoint, model_file, data_path, trust_checkpoint)
    saved_tokens = checkpoint.get("item_tokens")
    if saved_tokens is not None:
        tokens, source = _items_before_building(config)
        if tokens is not None:
            check_items(model_file, config, saved_tokens, tokens, f"{source}/{config['dataset']}.*")
    init_logger(config)
    data = prepare(config)  # the run's own path: cold start (held-out items) and train_sampling included
    dataset, train_data, valid_data, test_data, _ = data
    if saved_tokens is not None:
        check_items(model_file, config, saved_tokens, item_tokens(dataset), f"the dataset '{config['dataset']}'")
    model = build_model(config, data)
    load_weights(model, checkpoint, model_file)
    return config, model, dataset, train_data, valid_data, test_data
