"""Training that resumes to the epoch: a trainer mixin that keeps a resume state after every epoch.

With ``resume_training: True`` the trainer writes ``<cache>/<dataset>/runs/<resume_name>/state.pth`` after each epoch
(model, optimizer, scaler, RNG states, early-stopping counters, best score, best weights, per-epoch losses, validation
history and training seconds) and a run with the same config and data continues from the last finished epoch. The file is
written atomically and holds plain data only (read with ``weights_only=True``). A state of another config or other data
is refused, naming what differs. Start with :class:`ResumableTraining`.
"""

import hashlib
import os
import random
import time

import numpy as np
import torch

from recbole_genrec.checkpoint import config_state, decode, save_checkpoint
from recbole_genrec import store
from recbole_genrec.preprocess import cache

FORMAT = "recbole_genrec.resume"
VERSION = 1
# Keys that may differ between the run that wrote a state and the one that resumes it: where files are, how the
# process runs and when training stops, not what is trained.
NOT_COMPARED = {
    "data_path", "genrec_cache_dir", "genrec_source_data_path", "checkpoint_dir", "config_files", "show_progress",
    "state", "log_wandb", "wandb_project", "device", "gpu_id", "use_gpu", "worker", "cpu_threads", "local_rank",
    "single_spec", "nproc", "world_size", "offset", "ip", "port", "resume_training", "resume_name",
    "train_time_budget_s", "eval_batch_size", "beam_batch_size", "genrec_count_flops", "results_dir",
    "coldstart_epsilon",
}


def run_dir(config):
    """The store's ``<cache>/<dataset>/runs/<resume_name>/``; the name defaults to ``<model>-<dataset>``."""
    name = config["resume_name"] or f"{config['model']}-{config['dataset']}"
    if not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"resume_name={name!r} must be a plain folder name (no '{os.sep}'), e.g. SASRec-beauty")
    return store.run_dir(config, config["dataset"], name)


def data_fingerprint(train_data, valid_data=None):
    """sha256 of the training interactions (user and item ids in order), the item count and the evaluation users."""
    digest = hashlib.sha256()
    dataset = train_data._dataset
    for field in (dataset.uid_field, dataset.iid_field):
        if field is not None and field in dataset.inter_feat.columns:
            digest.update(dataset.inter_feat[field].numpy().tobytes())
    digest.update(str(dataset.item_num).encode())
    if valid_data is not None:
        valid = valid_data._dataset
        digest.update(valid.inter_feat[valid.iid_field].numpy().tobytes())
    return digest.hexdigest()


def config_differences(saved, current, limit=5, ignore=()):
    """``["key: saved -> current", ...]`` for compared keys whose values differ. A key that only one side has comes
    from another version of the plugin (a new setting at its default, or a removed one), not from the user's config,
    and is not compared; nor are :data:`NOT_COMPARED` and ``ignore`` (a model's :func:`inert_keys`)."""
    diffs = []
    for key in sorted(set(saved) & set(current), key=str):
        if key in NOT_COMPARED or key in ignore:
            continue
        a, b = saved[key], current[key]
        if repr(a) != repr(b):
            diffs.append(f"{key}: {a!r} there, {b!r} here")
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


def inert_keys(model, config):
    """Keys that change neither training nor model selection of ``model`` under ``config``: the model's
    ``resume_inert_keys(config)`` (RPG: the graph-decoding keys while every evaluation scores exactly), else none."""
    declared = getattr(model, "resume_inert_keys", None)
    return frozenset(declared(config)) if declared is not None else frozenset()


def _rng_state(train_data):
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
        "loader": train_data.generator.get_state() if getattr(train_data, "generator", None) is not None else None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state, train_data):
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state["loader"] is not None and getattr(train_data, "generator", None) is not None:
        train_data.generator.set_state(state["loader"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Trainer attributes kept across a restart where the trainer has them (GenerativeTrainer's time budget).
TRAINER_ATTRIBUTES = ("trained_seconds", "budget_stop_epoch", "_validated_since_training")


def _cpu(state_dict):
    return {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v for k, v in state_dict.items()}


class ResumableTraining:
    """Trainer mixin (in front of a RecBole ``Trainer`` subclass): resume to the epoch.

    ``fit`` restores the state of ``run_dir(config)`` when there is one (refusing another config's or data's),
    and writes it at the start of every epoch after the first one it trains (RecBole's loop has no end-of-epoch
    hook; the previous epoch's training, validation and early-stopping update are complete by then) and once more
    when ``fit`` returns, marked finished, so a restarted run goes straight to the test.
    ``genrec_history`` holds ``{"train": [{epoch, loss, seconds}], "valid": [{epoch, score, result, seconds}],
    "train_seconds": total}`` across restarts.
    """

    def _resume_path(self):
        return os.path.join(run_dir(self.config), "state.pth")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._resume_loader = train_data
        self._resume_data = data_fingerprint(train_data, valid_data)
        self._resume_saved = saved
        self.genrec_history = {"train": [], "valid": [], "train_seconds": 0.0}
        state = self._read_resume_state()
        if state is not None:
            self._restore(state, train_data)
            if state["finished"]:
                self.eval_collector.data_collect(train_data)  # as RecBole's fit does: ItemCoverage & co. need it
                self.logger.info(f"resume: {self._resume_path()} is a finished run (best valid score "
                                 f"{self.best_valid_score}); no training")
                return self.best_valid_score, self.best_valid_result
            self.logger.info(f"resume: continuing from epoch {self.start_epoch} ({self._resume_path()})")
        self._resume_first_epoch = self.start_epoch
        result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        self._write_resume_state(next_epoch=self.start_epoch, finished=True)
        return result

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx > self._resume_first_epoch:
            self._write_resume_state(next_epoch=epoch_idx, finished=False)
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
        seconds = time.perf_counter() - start
        trained = not getattr(self, "skips_epoch", lambda _: False)(epoch_idx)
        if trained:
            self.genrec_history["train_seconds"] += seconds
            shown = sum(loss) if isinstance(loss, tuple) else loss
            self.genrec_history["train"].append({"epoch": epoch_idx, "loss": float(shown), "seconds": seconds})
        self.start_epoch = epoch_idx + 1  # the epoch a finished state resumes from
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        start = time.perf_counter()
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        if result:  # an empty result is a budget stop, not a validation
            epoch = self.start_epoch - 1
            self.genrec_history["valid"].append({"epoch": epoch, "score": float(score),
                                                 "result": {k: float(v) for k, v in result.items()},
                                                 "seconds": time.perf_counter() - start})
        return score, result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        self._best_state = {"state_dict": _cpu(self.model.state_dict()), "epoch": epoch}

    # ------------------------------------------------------------------------------------------ state file
    def _write_resume_state(self, next_epoch, finished):
        train_data = self._resume_loader
        state = {
            "format": FORMAT, "version": VERSION, "finished": finished, "next_epoch": next_epoch,
            "config": config_state(self.config)["final_config_dict"], "data": self._resume_data,
            "model": _cpu(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if getattr(self, "scaler", None) is not None else None,
            "cur_step": int(self.cur_step), "best_valid_score": float(self.best_valid_score),
            "best_valid_result": None if self.best_valid_result is None
            else {k: float(v) for k, v in self.best_valid_result.items()},
            "best": getattr(self, "_best_state", None),
            "train_loss_dict": {int(k): float(v) for k, v in self.train_loss_dict.items()},
            "history": self.genrec_history,
            "rng": _rng_state(train_data),
            "trainer": {name: getattr(self, name) for name in TRAINER_ATTRIBUTES if hasattr(self, name)},
        }
        path = self._resume_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cache.atomic_write(path, lambda f: torch.save(state, f))

    def _read_resume_state(self):
        path = self._resume_path()
        if not os.path.isfile(path):
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path} is no resume state of recbole_genrec; move it away or delete its folder")
        current = config_state(self.config)["final_config_dict"]
        diffs = config_differences(state["config"], current, ignore=inert_keys(self.model, self.config))
        problem = None
        if diffs:
            problem = "its config differs: " + "; ".join(diffs)
        elif state["data"] != self._resume_data:
            problem = "its training data differ (another split, filter or version of the atomic files)"
        if problem:
            raise ValueError(
                f"resume state {path} belongs to another run: {problem}. Delete {os.path.dirname(path)} to train "
                f"afresh, or give this run its own resume_name (or resume_training: False)."
            )
        return state

    def _restore(self, state, train_data):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] is not None and getattr(self, "scaler", None) is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["next_epoch"])
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"]
        self.train_loss_dict = dict(state["train_loss_dict"])
        self.genrec_history = decode(state["history"])
        self._best_state = state["best"]
        for name, value in state["trainer"].items():
            setattr(self, name, value)
        if self._best_state is not None and self._resume_saved:  # the best weights, where evaluate() reads them
            save_checkpoint(self.saved_model_file, self.config, self._best_state["state_dict"],
                            self.model.other_parameter(), None, self._best_state["epoch"], self.cur_step,
                            self.best_valid_score, getattr(self, "genrec_item_tokens", None))
        _set_rng_state(state["rng"], train_data)


__all__ = ["ResumableTraining", "config_differences", "data_fingerprint", "inert_keys", "run_dir"]
