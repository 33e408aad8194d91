"""``CollabEmbedTrainer``: train the teacher on the training split, then the tower, then export.

RecBole's ``Trainer`` with three additions:

1. ``fit`` first trains CollabEmbed's sequential teacher on ``train_data`` (the training split only)
   unless the model already holds a trained one (``collab_teacher_checkpoint`` or a reloaded
   CollabEmbed checkpoint);
2. the optimiser only sees trainable parameters (the tower; the teacher is frozen);
3. after training it reloads the best checkpoint (when ``saved``) and, if ``collab_export``, writes the
   enhanced item embeddings to the cache (``CollabEmbed.export_embeddings``).
"""

import os

import torch
from recbole.trainer import Trainer

from recbole_genrec.checkpoint import PlainCheckpoints, load_checkpoint


class CollabEmbedTrainer(PlainCheckpoints, Trainer):
    def _build_optimizer(self, **kwargs):
        kwargs.setdefault("params", [p for p in self.model.parameters() if p.requires_grad])
        return super()._build_optimizer(**kwargs)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if not bool(self.model.teacher_ready):
            self.teacher_losses = self.model.fit_teacher(train_data, show_progress=show_progress)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # Multi-process runs: every rank uses rank 0's teacher (trained on rank 0's shard).
                for tensor in list(self.model.teacher.parameters()) + list(self.model.teacher.buffers()):
                    torch.distributed.broadcast(tensor.data, src=0)
        result = super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                             callback_fn=callback_fn)
        if saved and os.path.isfile(self.saved_model_file):
            checkpoint = load_checkpoint(self.saved_model_file, bool(self.config["trust_checkpoint"]), self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
        if self.config["collab_export"] and self.config["local_rank"] == 0:  # one writer in multi-process runs
            self.export_path = self.model.export_embeddings()
            self.logger.info(f"enhanced item embeddings written to {self.export_path}")
        return result
