# coding: utf-8
"""Trainer of the generative recommenders (TIGER and its subclasses).

RecBole's :class:`recbole.trainer.Trainer` with what seq2seq models need; ``fit`` (evaluation every ``eval_step``
epochs, early stopping on ``valid_metric``, checkpoints of the best epoch) and the evaluation loop are the parent's.

* optimizer: ``learner`` (default ``adamw``) with ``weight_decay``; with AdamW, biases, layer norms and embeddings are
  not decayed when ``no_decay_norm_and_bias`` is set;
* learning rate: linear warm-up over ``warmup_steps`` optimizer steps, then ``lr_scheduler``:
  ``cosine`` (to ``min_lr_ratio * learning_rate`` at the last step of ``epochs``), ``linear`` (same end point),
  ``inverse_sqrt`` (``lr * sqrt(warmup_steps / step)``, the T5/TIGER schedule) or ``constant``.  The factor is a
  pure function of the global step, so a resumed run continues the schedule;
* ``clip_grad_norm``: RecBole's dict of ``clip_grad_norm_`` arguments (e.g. ``{max_norm: 1.0}``) or a number;
* mixed precision (``enable_amp``) on CUDA only: bf16 autocast (``amp_dtype: bfloat16``, no scaler) or fp16
  autocast with a ``GradScaler`` (``amp_dtype: float16``); evaluation runs under the same autocast (beam scores are
  accumulated in float32).  On CPU training runs in float32;
* ``train_time_budget_s``: a cap on wall-clock training time (epochs, not validation), counted across restarts of a
  resumed run (:mod:`recbole_genrec.trainer.resume`): training stops at the end of the epoch that crosses it; the
  weights of that epoch are validated if they were not, and the test follows. The learning-rate schedule runs over
  ``epochs`` whatever the budget. Before the first epoch a probe times the forward + backward pass of a few batches
  (spread over the history lengths, after a warm-up pass; weights and random state restored) and fit fails with the
  arithmetic when that estimate of one epoch exceeds the budget; ``~`` = no budget;
* ``train_length_buckets`` (default on): training batches of similar history length
  (:class:`~recbole_genrec.generative.batching.LengthBuckets`, a fresh shuffled order per epoch fixed by ``seed``
  and the epoch), built by the loader's own ``collate_fn``; the models drop the columns that are padding for the
  whole batch, so most of the encoder's work on padding disappears (exact: same loss and gradients per sample);
* ``cpu_bf16`` (default off): bf16 autocast of training on CPUs (matrix products in bf16, losses in float32);
  evaluation stays in float32;
* the log line of every epoch carries its wall time (RecBole's) and the current learning rate;
* multi-process evaluation (:class:`recbole_genrec.distributed.ShardedEvaluation`): each rank runs beam search on
  its shard of the users; instead of RecBole's ``_map_reduce`` (the ranks' mean metrics weighted by their number of
  batches, with the users that ``DistributedSampler`` repeats to pad the shards counted twice) every rank's per-user
  rows are gathered, repeats dropped, and the metrics computed once over all users, so each user weighs the same
  and the result equals a single-process evaluation (a users-weighted mean of the ranks' metrics is the fallback).

Checkpoints are plain data (:class:`~recbole_genrec.checkpoint.PlainCheckpoints`: tensors, the config as a dict):
the model's ``state_dict`` holds the :class:`~recbole_genrec.generative.CodeTable` buffers, so
``recbole_genrec.load_data_and_model`` rebuilds a model that recommends identically.
"""

import contextlib
import math
import re
import time

import torch
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole.trainer import Trainer
from recbole.utils import get_gpu_usage, set_color

from recbole_genrec.checkpoint import PlainCheckpoints
from recbole_genrec.distributed import ShardedEvaluation
from recbole_genrec.generative.batching import LengthBuckets, bucketed_interactions, sample_lengths

_SCHEDULES = ("cosine", "linear", "inverse_sqrt", "constant")


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "inverse_sqrt":
        return math.sqrt(max(warmup_steps, 1) / (step + 1))
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    if schedule == "linear":
        shape = 1.0 - progress
    else:  # cosine
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


class GenerativeTrainer(PlainCheckpoints, ShardedEvaluation, Trainer):
    r"""RecBole ``Trainer`` with AdamW, warm-up + decay schedule, gradient clipping and bf16/fp16 autocast.

    Under DDP, ``evaluate`` and ``_map_reduce`` come from :class:`~recbole_genrec.distributed.ShardedEvaluation`:
    metrics are reduced over users, not batches (every evaluated user once, whatever rank evaluated it).
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.lr_scheduler = str(config["lr_scheduler"]).lower()
        if self.lr_scheduler not in _SCHEDULES:
            raise ValueError(f"lr_scheduler must be one of {_SCHEDULES}, got {config['lr_scheduler']!r}")
        self.warmup_steps = int(config["warmup_steps"])
        self.min_lr_ratio = float(config["min_lr_ratio"])
        self.global_step = 0
        self.steps_per_epoch = None
        amp_dtype = str(config["amp_dtype"]).lower()
        if amp_dtype not in ("bfloat16", "float16"):
            raise ValueError(f"amp_dtype must be bfloat16 or float16, got {amp_dtype!r}")
        self.use_amp = bool(self.enable_amp) and self.device.type == "cuda"
        self.cpu_bf16 = bool(config["cpu_bf16"]) and self.device.type == "cpu"
        self.length_buckets = bool(config["train_length_buckets"])
        self._buckets = None
        self.amp_dtype = torch.bfloat16 if amp_dtype == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.max_grad_norm = self._clip_args(config["clip_grad_norm"])
        self.time_budget = float(config["train_time_budget_s"] or 0.0)  # ~ (TIGER.yaml) = no budget
        self.trained_seconds = 0.0  # wall-clock seconds of training so far (restored on resume)
        self.budget_stop_epoch = None  # the epoch that crossed train_time_budget_s: the last one trained
        self._epoch_idx = 0  # the epoch RecBole's fit loop is in (validation follows its training)
        self._validated_since_training = False  # past the budget, one validation of the last trained weights suffices

    # ------------------------------------------------------------------------------------------------ building
    @staticmethod
    def _clip_args(value):
        if not value:
            return None
        return dict(value) if isinstance(value, dict) else {"max_norm": float(value)}

    def _build_optimizer(self, **kwargs):
        """AdamW by default; with ``no_decay_norm_and_bias`` biases, norms and embeddings get no weight decay."""
        learner = kwargs.get("learner", self.learner)
        if learner.lower() != "adamw" or "params" in kwargs:
            return super()._build_optimizer(learner=learner, **{k: v for k, v in kwargs.items() if k != "learner"})
        weight_decay = kwargs.get("weight_decay", self.weight_decay)
        learning_rate = kwargs.get("learning_rate", self.learning_rate)
        decay, no_decay = [], []
        skip_norms = self.config["no_decay_norm_and_bias"]
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            plain = param.dim() < 2 or "embed" in name or "shared" in name
            (no_decay if skip_norms and plain else decay).append(param)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)

    def autocast(self, training: bool = False):
        """Autocast context of training and evaluation (a no-op unless ``enable_amp`` on CUDA, or ``cpu_bf16`` when
        training on CPU)."""
        if training and self.cpu_bf16:
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _set_lr(self) -> float:
        total = self.steps_per_epoch * self.epochs  # the horizon is the configured epochs, budget or not
        factor = lr_factor(self.global_step, self.warmup_steps, total, self.lr_scheduler, self.min_lr_ratio)
        lr = self.learning_rate * factor
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    # ------------------------------------------------------------------------------------------------ training
    def _budget_crossed(self) -> bool:
        """Whether the training time so far has reached ``train_time_budget_s`` (on any rank, so all stop together)."""
        crossed = self.trained_seconds >= self.time_budget
        if not self.config["single_spec"]:
            value = torch.tensor([int(crossed)], device=self.device)
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
            crossed = bool(value.item())
        return crossed

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.time_budget and self.start_epoch == 0:
            self.check_time_budget(train_data)
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _probe_batches(self, train_data, n_probe: int):
        """A few training batches for the timing probe: spread over the history lengths when bucketed."""
        if self._bucketed(train_data):
            self._epoch_batches(train_data, 0)  # builds self._buckets
            lengths = self._buckets.lengths
            batches = sorted(self._buckets.epoch_batches(0), key=lambda b: int(lengths[b].max()))
            picks = [batches[int((i + 0.5) / n_probe * len(batches))] for i in range(n_probe)]
            return [train_data.collate_fn(b.tolist()) for b in picks], len(self._buckets)
        probe = []
        for interaction in train_data:
            probe.append(interaction)
            if len(probe) == n_probe:
                break
        return probe, len(train_data)

    def check_time_budget(self, train_data, n_probe: int = 3) -> float:
        """Estimated seconds of one epoch: the mean forward + backward time of ``n_probe`` batches (spread over the
        history lengths, after one untimed warm-up pass; no optimizer step) x batches per epoch.  Raises
        ``ValueError`` with the arithmetic when it exceeds ``train_time_budget_s``.  The model's weights,
        gradients and the random state are left as they were."""
        rng_state = torch.random.get_rng_state()
        batches, n_batches = self._probe_batches(train_data, n_probe)
        self.model.train()
        seconds = []
        for i, interaction in enumerate([batches[0]] + batches):  # the first pass warms up, untimed
            interaction = interaction.to(self.device)
            start = time.perf_counter()
            with self.autocast(training=True):
                losses = self.model.calculate_loss(interaction)
            loss = sum(losses) if isinstance(losses, tuple) else losses
            loss.backward()
            if i > 0:
                seconds.append(time.perf_counter() - start)
        self.model.zero_grad(set_to_none=True)
        torch.random.set_rng_state(rng_state)
        per_batch = sum(seconds) / max(len(seconds), 1)
        estimate = per_batch * n_batches
        if estimate > self.time_budget:
            raise ValueError(
                f"train_time_budget_s={self.time_budget:g} is too small for one epoch: {n_batches} batches x "
                f"{per_batch:.2f} s (forward + backward of {len(seconds)} probe batches, without the optimizer step) "
                f"= {estimate:.0f} s. Raise train_time_budget_s to at least {math.ceil(estimate * 1.2)} or train a "
                f"smaller model / fewer samples."
            )
        self.logger.info(f"train_time_budget_s={self.time_budget:g}: one epoch ~ {n_batches} batches x "
                         f"{per_batch:.2f} s = {estimate:.0f} s (probe), so at most "
                         f"{int(self.time_budget // estimate)} epochs fit")
        return estimate

    def skips_epoch(self, epoch_idx: int) -> bool:
        """True for the epochs after the one that crossed ``train_time_budget_s`` (not trained, not timed)."""
        return self.budget_stop_epoch is not None and epoch_idx > self.budget_stop_epoch

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._epoch_idx = epoch_idx
        if self.skips_epoch(epoch_idx):
            return 0.0  # over the time budget: nothing to train (validation / test still follow)
        self._validated_since_training = False
        start = time.perf_counter()
        loss = self._train_one_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.trained_seconds += time.perf_counter() - start
        if self.time_budget and self.budget_stop_epoch is None and self._budget_crossed():
            self.budget_stop_epoch = epoch_idx
            self.logger.info(f"train_time_budget_s={self.time_budget:g}: {self.trained_seconds:.0f} s of training "
                             f"after epoch {epoch_idx}; training stops here (its weights are validated, then tested)")
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        """RecBole's validation, except after the time budget once the last trained weights were validated: the
        weights cannot change any more, so the score is the worst possible and early stopping ends the run at once
        (equal scores count as improvements in RecBole, so re-validating would run until ``epochs``)."""
        if self.skips_epoch(self._epoch_idx) and self._validated_since_training:
            self.logger.info("train_time_budget_s: no training since the last validation, stopping")
            self.cur_step = self.stopping_step
            return (float("-inf") if self.valid_metric_bigger else float("inf")), {}
        result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._validated_since_training = True
        return result

    def _bucketed(self, train_data) -> bool:
        """Whether this loader's batches are length-bucketed (``train_length_buckets`` and a history-length field)."""
        if not self.length_buckets or not getattr(train_data, "shuffle", False):
            return False
        field = self.config["ITEM_LIST_LENGTH_FIELD"]
        dataset = getattr(train_data, "_dataset", None)
        return dataset is not None and field in dataset.inter_feat.columns

    def _epoch_batches(self, train_data, epoch_idx):
        """``(iterable of Interaction, number of batches)`` of one training epoch."""
        if not self._bucketed(train_data):
            if not self.config["single_spec"] and train_data.shuffle:
                train_data.sampler.set_epoch(epoch_idx)
            return train_data, len(train_data)
        if self._buckets is None or self._buckets.lengths.size != train_data.sample_size:
            single = self.config["single_spec"]
            rank = 0 if single else torch.distributed.get_rank()
            world = 1 if single else torch.distributed.get_world_size()
            lengths = sample_lengths(train_data, self.config["ITEM_LIST_LENGTH_FIELD"])
            self._buckets = LengthBuckets(lengths, train_data.step, seed=int(self.config["seed"]),
                                          rank=rank, world_size=world)
            bucketed, uniform = self._buckets.padding_fraction(0)
            self.logger.info(f"train_length_buckets: {len(self._buckets)} batches of similar history length per "
                             f"epoch; padding {uniform:.0%} of the history slots with uniform batches, "
                             f"{bucketed:.0%} bucketed")
        return bucketed_interactions(train_data, self._buckets, epoch_idx), len(self._buckets)

    def _train_one_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        batches, n_batches = self._epoch_batches(train_data, epoch_idx)
        self.steps_per_epoch = n_batches
        self.global_step = epoch_idx * self.steps_per_epoch  # resumable: the schedule depends on the step only
        iter_data = (
            tqdm(batches, total=n_batches, ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink"))
            if show_progress
            else batches
        )
        total_loss = None
        lr = self.learning_rate
        for interaction in iter_data:
            interaction = interaction.to(self.device)
            lr = self._set_lr()
            self.optimizer.zero_grad()
            sync_loss = 0
            if not self.config["single_spec"]:
                self.set_reduce_hook()
                sync_loss = self.sync_grad_loss()
            with self.autocast(training=True):
                losses = loss_func(interaction)
            if isinstance(losses, tuple):
                loss = sum(losses)
                loss_tuple = tuple(part.item() for part in losses)
                total_loss = loss_tuple if total_loss is None else tuple(map(sum, zip(total_loss, loss_tuple)))
            else:
                loss = losses
                total_loss = losses.item() if total_loss is None else total_loss + losses.item()
            self._check_nan(loss)
            self.scaler.scale(loss + sync_loss).backward()
            if self.max_grad_norm:
                self.scaler.unscale_(self.optimizer)
                clip_grad_norm_(self.model.parameters(), **self.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.global_step += 1
            if show_progress:
                postfix = f"loss: {loss.item():.4f}, lr: {lr:.2e}"
                if self.gpu_available:
                    postfix += ", GPU RAM: " + get_gpu_usage(self.device)
                iter_data.set_postfix_str(set_color(postfix, "yellow"))
        self.current_lr = lr
        return total_loss

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        output = super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)  # "... [time: ..s, ...]"
        names = getattr(getattr(self.model, "module", self.model), "loss_names", None)  # DDP wraps the model
        if isinstance(losses, tuple) and names:
            for idx in reversed(range(len(losses))):  # RecBole numbers the parts: train_loss1, train_loss2, ...
                output = re.sub(rf"train_loss{idx + 1}(?=\x1b\[0m:|:)", f"{names[idx]} loss", output)
        lr = getattr(self, "current_lr", self.learning_rate)
        return output[:-1] + ", " + set_color("lr", "blue") + f": {lr:.2e}]"

    # ---------------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluation under this trainer's autocast; sharded across ranks under DDP (see the class)."""
        with self.autocast():
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
