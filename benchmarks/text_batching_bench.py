"""MiniLM item-text encoding: the earlier character-length batches against encode_texts' token-length batches, same
texts, same process (old, new, old again), plus the largest embedding difference and the padded token counts.

    nice -n 10 python benchmarks/text_batching_bench.py [--items N] [--data-path ../shared/data]

Reads amazon-beauty's item file from the data path and says so when it is missing.
"""

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from recbole_genrec.preprocess import text_encoder as te  # noqa: E402


def beauty_texts(data_path, n_items):
    """The first ``n_items`` amazon-beauty item texts: title. brand. categories."""
    path = os.path.join(data_path, "amazon-beauty", "amazon-beauty.item")
    if not os.path.isfile(path):
        sys.exit(f"{path} is missing: this benchmark reads amazon-beauty's item texts (pass --data-path)")
    df = pd.read_csv(path, sep="\t")
    texts = (df["title:token_seq"].fillna("") + ". " + df["brand:token"].fillna("") + ". "
             + df["categories:token_seq"].fillna(""))
    return texts.tolist()[:n_items]


def character_length_batches(tok, model, mode, texts, batch_size=128):
    """The earlier encoder: batches of texts sorted by character length. Returns `(N, 384)` and padded tokens."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out, tokens = [], 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            inputs = tok([texts[i] for i in order[start:start + batch_size]], padding=True, truncation=True,
                         max_length=128, return_tensors="pt")
            tokens += inputs["input_ids"].numel()
            pooled = te.pool(model(**inputs).last_hidden_state, inputs["attention_mask"], mode, False)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    result = np.empty((len(texts), out[0].shape[1]), np.float32)
    result[order] = np.concatenate(out)
    return result, tokens


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1536, help="how many item texts to encode")
    parser.add_argument("--data-path", default=os.path.join(ROOT, "..", "shared", "data"))
    args = parser.parse_args(argv)
    texts = beauty_texts(args.data_path, args.items)
    path = te.resolve_encoder_path("all-MiniLM-L6-v2")
    tok, model = te.load_encoder(path, torch.device("cpu"))
    mode, _ = te.pooling_spec(path, "auto")

    start = time.perf_counter()
    old, padded = character_length_batches(tok, model, mode, texts)
    t_old = time.perf_counter() - start
    start = time.perf_counter()
    new = te.encode_texts(texts, encoder="all-MiniLM-L6-v2", pooling="auto", max_length=128, batch_size=128,
                          show_progress=False)
    t_new = time.perf_counter() - start
    start = time.perf_counter()
    character_length_batches(tok, model, mode, texts)
    t_old2 = time.perf_counter() - start
    real = sum(len(ids) for ids in tok(texts, truncation=True, max_length=128)["input_ids"])
    print(f"old {t_old:.1f}s/{t_old2:.1f}s new {t_new:.1f}s; padded tokens old {padded} real {real}; "
          f"max diff {np.abs(old - new).max():.2e}")


if __name__ == "__main__":
    main()
