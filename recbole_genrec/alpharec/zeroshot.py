r"""Zero-shot transfer of AlphaRec to an unseen dataset (Sheng et al., ICLR 2025, Section 4.2).

AlphaRec's only trainable weights are the mapping (MLP or linear) from the language space to the
collaborative space. Items of any dataset encoded by the *same* text encoder live in the same
language space, so the mapping trained on a source dataset applies to a target dataset as is:

1. train AlphaRec on ``--source`` (RecBole's pipeline, checkpoint chosen on its validation
   split), or load ``--checkpoint``;
2. build an AlphaRec on ``--target``: item vectors from the target's LM embeddings, user vectors
   = mean LM embedding of each user's *target training* items, the target training graph;
3. load the source mapping weights (``state_dict`` holds nothing else; no parameter is updated)
   and evaluate with the trainer of :func:`recbole_genrec.run_builder.trainer_class` on the target test split;
4. evaluate RecBole's ``Pop`` (exact item counts of the same target training split, see
   :func:`popularity_model`) on the same test split.

Command line::

    python -m recbole_genrec.alpharec.cli zeroshot --source=amazon-beauty --target=ml-100k \
        [--checkpoint saved/AlphaRec-....pth] [--config_files a.yaml ...] [--source_epochs 20] \
        [--target_eval_args "{split: {RS: [0.8, 0.1, 0.1]}, order: RO, group_by: user, mode: full}"] \
        [--key=value ...]   # extra RecBole config keys for both datasets

The architecture keys of the source run (``embedding_size``, ``alpharec_hidden_size``,
``alpharec_mapping``, ``n_layers``, ``text_encoder``, ``text_pooling``, ``text_max_length``) are
copied to the target config so that the weights fit and the LM space is the same.
"""

import logging

import torch
from recbole.model.general_recommender import Pop

from recbole_genrec.config import Config
from recbole_genrec.quick_start import run_recbole_genrec
from recbole_genrec.run_builder import build_model, prepare, trainer_class

logger = logging.getLogger(__name__)

ARCH_KEYS = ("embedding_size", "alpharec_hidden_size", "alpharec_mapping", "n_layers",
             "text_encoder", "text_pooling", "text_max_length")


def train_source(source, config_files=None, config_dict=None):
    """Train AlphaRec on ``source``; returns the result dict of ``run_recbole_genrec`` (with ``checkpoint``)."""
    return run_recbole_genrec(model="AlphaRec", dataset=source, config_file_list=config_files,
                              config_dict=config_dict, saved=True)


def _load_checkpoint(path, config_dict=None):
    """The checkpoint as data (:func:`recbole_genrec.checkpoint.load_checkpoint`); ``trust_checkpoint`` in
    ``config_dict`` (``--trust-checkpoint``) is the opt-in for files that are not."""
    from recbole_genrec.checkpoint import load_checkpoint

    return load_checkpoint(path, bool((config_dict or {}).get("trust_checkpoint")))


def build_target(target, checkpoint, config_files=None, config_dict=None):
    """``(config, model, train_data, valid_data, test_data)``: an AlphaRec on ``target`` carrying the
    source mapping weights of ``checkpoint`` (a path or a loaded RecBole checkpoint dict)."""
    ckpt = _load_checkpoint(checkpoint, config_dict) if isinstance(checkpoint, str) else checkpoint
    source_config = ckpt["config"]
    target_dict = {}
    for key in ARCH_KEYS:
        if key in source_config and source_config[key] is not None:
            target_dict[key] = source_config[key]
    target_dict.update(config_dict or {})
    config = Config(model="AlphaRec", dataset=target, config_file_list=config_files, config_dict=target_dict)
    data = prepare(config)
    _, train_data, valid_data, test_data, _ = data
    model = build_model(config, data)
    state = ckpt["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise RuntimeError(
            f"the source AlphaRec weights do not fit the target model (source LM dim / mapping differ?): {err}"
        ) from None
    model.eval()
    return config, model, train_data, valid_data, test_data


def popularity_model(config, train_data):
    """RecBole's ``Pop`` holding the exact item counts of the training split.

    RecBole's ``Pop.calculate_loss`` adds one per *batch* to an item however often it occurs in the batch
    (``item_cnt[item] += 1`` with repeated indices), so with large batches the counts of popular items saturate
    at the number of batches and their order becomes arbitrary; a weakened baseline. The counts are set here
    from the training split itself.
    """
    dataset = train_data.dataset
    pop = Pop(config, dataset).to(config["device"])
    items = dataset.inter_feat[dataset.iid_field]  # [n_train_interactions]
    counts = torch.bincount(items.long(), minlength=pop.n_items)[: pop.n_items]  # [n_items]
    pop.item_cnt = counts.view(-1, 1).to(pop.item_cnt.device)  # [n_items, 1]
    pop.max_cnt = pop.item_cnt.max(dim=0)[0]  # [1]
    pop.eval()
    return pop


def evaluate_model(config, model, test_data):
    trainer = trainer_class(config)(config, model)
    return dict(trainer.evaluate(test_data, load_best_model=False, show_progress=False))


def zero_shot(source, target, checkpoint=None, config_files=None, config_dict=None, source_config_dict=None,
              target_config_dict=None):
    """Run the whole protocol; returns ``(rows, info)`` where ``rows`` is a list of
    ``{"method", **metrics}`` for the zero-shot AlphaRec and Pop on the target test split."""
    info = {"source": source, "target": target}
    if checkpoint is None:
        result = train_source(source, config_files, {**(config_dict or {}), **(source_config_dict or {})})
        checkpoint = result["checkpoint"]
        info.update(source_test=dict(result["test_result"]), source_epochs=result.get("epochs"),
                    source_seconds_per_epoch=result.get("train_seconds_per_epoch"))
    info["checkpoint"] = checkpoint
    config, model, train_data, _, test_data = build_target(
        target, checkpoint, config_files, {**(config_dict or {}), **(target_config_dict or {})})
    rows = [{"method": f"AlphaRec zero-shot ({source} -> {target})", **evaluate_model(config, model, test_data)}]
    pop = popularity_model(config, train_data)
    rows.append({"method": "Pop (target train split)", **evaluate_model(config, pop, test_data)})
    return rows, info


def format_table(rows):
    metrics = [k for k in rows[0] if k != "method"]
    lines = ["| method | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(f"{float(r[m]):.4f}" for m in metrics) + " |")
    return "\n".join(lines)
