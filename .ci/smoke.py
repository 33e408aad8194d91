"""Smoke test of an installed recbole-genrec, run from a folder outside the checkout (so the wheel is imported):
the packaged properties are found, models resolve, and a tiny TIGER trains, beam-searches and reloads from its
checkpoint with identical recommendations.

    python .ci/smoke.py <checkout>/tests/data
"""

import os
import sys
import tempfile

import torch

import recbole_genrec
import transformers
from recbole_genrec import load_data_and_model, run_recbole_genrec
from recbole_genrec.run_builder import trainer_class
from recbole_genrec.utils import get_model, properties_dir

data = os.path.abspath(sys.argv[1])
assert "site-packages" in recbole_genrec.__file__, f"not the installed wheel: {recbole_genrec.__file__}"
assert os.path.isfile(os.path.join(properties_dir(), "overall.yaml")), properties_dir()
print("wheel OK:", recbole_genrec.__file__, [get_model(m).__name__ for m in ("TIGER", "BPR")],
      "transformers", transformers.__version__)

work = tempfile.mkdtemp()
settings = {
    "data_path": data, "genrec_cache_dir": work, "checkpoint_dir": os.path.join(work, "saved"), "show_progress": False,
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": 10,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "d_model": 32, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "d_kv": 16,
    "sid_method": "rkmeans", "sid_levels": 2, "sid_codebook_size": 8, "beam_size": 8, "topk": [5],
    "metrics": ["Recall", "NDCG"], "valid_metric": "Recall@5", "epochs": 2, "genrec_count_flops": False,
}
sys.argv = sys.argv[:1]  # RecBole reads --key=value options from the command line
result = run_recbole_genrec(model="TIGER", dataset="tiny", config_dict=settings)
config, model, _, _, _, test_data = load_data_and_model(result["checkpoint"], data_path=data)
reloaded = trainer_class(config)(config, model).evaluate(test_data, load_best_model=False)
assert {k: round(float(v), 6) for k, v in reloaded.items()} == \
    {k: round(float(v), 6) for k, v in result["test_result"].items()}, (reloaded, result["test_result"])
model.eval()
with torch.no_grad():
    scores = model.full_sort_predict(next(iter(test_data))[0])  # beam search -> [B, n_items]
assert torch.isfinite(scores).sum(dim=1).ge(5).all()  # every user gets at least top-5 real items
print("TIGER OK: trained, beam-searched, reloaded with the same test result:",
      {k: round(float(v), 4) for k, v in result["test_result"].items()})
