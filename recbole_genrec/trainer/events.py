"""``RunEvents``: the trainer mixin that times every trained epoch and tells listeners what happened.

A listener is any object with some of these methods (all optional)::

    trainer_built(trainer)                               # the trainer exists, before fit
    epoch_trained(trainer, epoch_idx, seconds, loss)     # one trained epoch (budget-skipped epochs are not)
    evaluated(trainer, eval_data, seconds, result)       # one validation or test evaluation

The benchmark harness is one (``benchmarks/harness/worker.py``); :func:`recbole_genrec.run_builder.build` attaches
them. Wall times of the trained epochs are kept in ``trainer.genrec_epoch_seconds``.
"""

import time


class RunEvents:
    genrec_listeners = ()

    def __init__(self, config, model):
        super().__init__(config, model)
        self.genrec_epoch_seconds = []

    def _notify(self, event, *args):
        for listener in self.genrec_listeners:
            handler = getattr(listener, event, None)
            if handler is not None:
                handler(self, *args)

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        skips = getattr(self, "skips_epoch", None)  # GenerativeTrainer: epochs past train_time_budget_s
        skipped = skips is not None and skips(epoch_idx)
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
        if not skipped:
            seconds = time.perf_counter() - start
            self.genrec_epoch_seconds.append(seconds)
            self._notify("epoch_trained", epoch_idx, seconds, loss)
        return loss

    def evaluate(self, eval_data, *args, **kwargs):
        start = time.perf_counter()
        result = super().evaluate(eval_data, *args, **kwargs)
        self._notify("evaluated", eval_data, time.perf_counter() - start, result)
        return result


__all__ = ["RunEvents"]
