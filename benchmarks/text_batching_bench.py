"""MiniLM item-text encoding: the earlier character-length batches against encode_texts' token-length batches, same
texts, same process (old, new, old again), plus the largest embedding difference and the padded token counts.

    nice -n 10 python benchmarks/text_batching_bench.py [N_ITEMS]
"""
import os, sys, time, numpy as np, torch, pandas as pd
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from recbole_genrec.preprocess import text_encoder as te
df = pd.read_csv(os.path.join(ROOT, '..', 'shared', 'data', 'amazon-beauty', 'amazon-beauty.item'), sep='\t')
texts = (df['title:token_seq'].fillna('') + '. ' + df['brand:token'].fillna('') + '. ' + df['categories:token_seq'].fillna('')).tolist()[:int(sys.argv[1]) if len(sys.argv) > 1 else 1536]
path = te.resolve_encoder_path("all-MiniLM-L6-v2"); tok, model = te.load_encoder(path, torch.device('cpu'))
mode, norm = te.pooling_spec(path, 'auto')
def old(texts, bs=128):
    order = np.argsort([-len(t) for t in texts], kind='stable'); out=[]; toks=0
    with torch.inference_mode():
        for s in range(0, len(texts), bs):
            inp = tok([texts[i] for i in order[s:s+bs]], padding=True, truncation=True, max_length=128, return_tensors='pt')
            toks += inp['input_ids'].numel()
            v = te.pool(model(**inp).last_hidden_state, inp['attention_mask'], mode, False)
            out.append(torch.nn.functional.normalize(v, dim=1).numpy())
    res = np.empty((len(texts), 384), np.float32); res[order]=np.concatenate(out); return res, toks
t=time.perf_counter(); a, toks = old(texts); t_old=time.perf_counter()-t
t=time.perf_counter(); b = te.encode_texts(texts, encoder="all-MiniLM-L6-v2", pooling="auto", max_length=128, batch_size=128, show_progress=False); t_new=time.perf_counter()-t
t=time.perf_counter(); a2, _ = old(texts); t_old2=time.perf_counter()-t
enc = tok(texts, truncation=True, max_length=128)['input_ids']; real = sum(len(e) for e in enc)
print(f"old {t_old:.1f}s/{t_old2:.1f}s new {t_new:.1f}s; padded tokens old {toks} real {real}; max diff {np.abs(a-b).max():.2e}")
