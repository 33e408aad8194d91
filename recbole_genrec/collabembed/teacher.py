"""The frozen sequential teacher of CollabEmbed: build it, load it, or train it on the training split.

A teacher is any RecBole sequential model whose ``forward(item_seq, item_seq_len)`` returns the
history representation [B, H] and whose ``item_embedding`` (``nn.Embedding``) is the ID item table of
the same width H: SASRec (default), GRU4Rec, NARM, ... For SASRec/GRU4Rec trained with CE the next-item
logits are ``forward(...) @ item_embedding.weight.T``, so both teacher targets of CollabEmbed (history
vectors and ID item vectors) live in one space.
"""

import copy
import logging
import os

import recbole
import torch
from recbole.utils import set_color
from tqdm import tqdm

from recbole_genrec.checkpoint import load_checkpoint
from recbole_genrec.utils import get_model

logger = logging.getLogger(__name__)


def _defaults_of(model_name):
    """RecBole's own ``properties/model/<model_name>.yaml`` as a dict ({} if there is none)."""
    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{model_name}.yaml")
    if not os.path.isfile(path):
        return {}
    from recbole_genrec.safety import load_yaml

    with open(path, encoding="utf-8") as f:
        return load_yaml(f.read(), path) or {}  # plain values only, RecBole's float rule


def teacher_config(config, model_name, params):
    """A copy of ``config`` for the teacher: RecBole's defaults of ``model_name``, then ``params``.

    Only ``collab_teacher_params`` sets teacher hyperparameters (keys such as ``hidden_size`` given
    for CollabEmbed itself do not leak into the teacher unless listed there). ``loss_type`` is CE.
    """
    teacher = copy.copy(config)
    teacher.final_config_dict = dict(config.final_config_dict)
    teacher.final_config_dict.update(_defaults_of(model_name))
    teacher.final_config_dict.update(dict(params or {}))
    teacher["model"] = model_name
    teacher["loss_type"] = "CE"
    return teacher


def _check_teacher(teacher, name):
    table = getattr(teacher, "item_embedding", None)
    if not isinstance(table, torch.nn.Embedding):
        raise ValueError(f"collab_teacher_model {name} has no nn.Embedding `item_embedding`; "
                         "use SASRec, GRU4Rec or NARM")
    seq = torch.ones(1, 1, dtype=torch.long, device=table.weight.device)
    teacher.eval()
    with torch.no_grad():
        out = teacher(seq, torch.ones(1, dtype=torch.long, device=seq.device))
    if out.dim() != 2 or out.shape[-1] != table.embedding_dim:
        raise ValueError(f"collab_teacher_model {name}: forward(item_seq, item_seq_len) returned {tuple(out.shape)}, "
                         f"expected [B, {table.embedding_dim}] (a history vector as wide as its item table)")
    return teacher


def build_teacher(config, dataset, model_name, params):
    """A freshly initialised teacher ``model_name`` for ``dataset`` (the training dataset)."""
    model = get_model(model_name)(teacher_config(config, model_name, params), dataset)
    return _check_teacher(model, model_name)


def load_teacher(config, dataset, checkpoint_path):
    """The teacher stored in a RecBole checkpoint (e.g. ``run_recbole_genrec('SASRec', ..., saved=True)``).

    Its config (hyperparameters) comes from the checkpoint; the item table must have as many rows as
    this dataset has items, i.e. the checkpoint must come from the same dataset and filtering (same
    RecBole item ids). Returns ``(teacher, model name)``.
    """
    checkpoint = load_checkpoint(checkpoint_path, bool(config["trust_checkpoint"]))  # data only, unless trusted
    saved_config = checkpoint["config"]
    name = saved_config["model"]
    teacher_conf = copy.copy(saved_config)
    teacher_conf.final_config_dict = dict(saved_config.final_config_dict)
    teacher_conf["device"] = config["device"]
    model = get_model(name)(teacher_conf, dataset)
    rows = checkpoint["state_dict"].get("item_embedding.weight")
    if rows is not None and rows.shape[0] != model.n_items:
        raise ValueError(f"teacher checkpoint {checkpoint_path} has {rows.shape[0]} items, this dataset "
                         f"{model.n_items}: it must be trained on the same dataset with the same filtering")
    model.load_state_dict(checkpoint["state_dict"])
    logger.info(f"loaded teacher {name} from {checkpoint_path}")
    return _check_teacher(model, name), name


def train_teacher(teacher, train_data, epochs, learning_rate, show_progress=False, weight_decay=0.0):
    """Train ``teacher`` with its own ``calculate_loss`` for ``epochs`` passes over ``train_data``.

    ``train_data`` is RecBole's training dataloader: no validation or test interaction is seen (no
    early stopping either; the epoch count is fixed). Returns the mean loss of each epoch.
    """
    params = [p for p in teacher.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    device = next(teacher.parameters()).device
    history = []
    teacher.train()
    try:
        for epoch in range(int(epochs)):
            batches = tqdm(train_data, total=len(train_data), ncols=100,
                           desc=set_color(f"Teacher {epoch:>3}", "pink")) if show_progress else train_data
            total, count = 0.0, 0
            for interaction in batches:
                interaction = interaction.to(device)
                loss = teacher.calculate_loss(interaction)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, count = total + loss.item(), count + 1
            history.append(total / max(count, 1))
            logger.info(f"teacher epoch {epoch}: train loss {history[-1]:.4f}")
    finally:
        teacher.eval()
        for p in params:
            p.requires_grad_(False)
    return history
