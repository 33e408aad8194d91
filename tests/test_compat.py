"""Each compat shim repairs a real break: the scenario fails without that shim and passes with it.

Every scenario runs in a fresh interpreter that applies all shims except the one under test. The package's
``__init__`` (which would apply them all) is kept out with a bare package module, so the shims' own imports of
``recbole_genrec`` submodules work without it.
"""

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")

PRELUDE = textwrap.dedent(
    """
    import importlib.util, sys, types
    package = types.ModuleType("recbole_genrec")
    package.__path__ = [{package!r}]
    sys.modules["recbole_genrec"] = package
    skip = {skip!r}
    if skip == "shim_pkg_resources":
        # Simulate setuptools>=81, which no longer ships pkg_resources.
        sys.modules["pkg_resources"] = None
    spec = importlib.util.spec_from_file_location("genrec_compat", {compat!r})
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    for name in ["shim_pkg_resources", "shim_numpy_aliases", "shim_checkpoint_allowlist", "shim_dok_update",
                 "shim_item_metrics", "shim_sine_anomaly"]:
        if name != skip:
            getattr(compat, name)()
    """
)

SCENARIOS = {
    "shim_pkg_resources": (
        "import ray.tune\nimport recbole.quick_start\nprint('OK')",
        "pkg_resources",
    ),
    "shim_numpy_aliases": (
        "from recbole.config import Config\n"
        f"Config(model='BPR', dataset='tiny', config_dict={{'data_path': {DATA!r}}})\nprint('OK')",
        "float_",
    ),
    "shim_checkpoint_allowlist": (
        textwrap.dedent(
            """
            import tempfile, os, torch
            from recbole.config import Config
            import recbole.trainer.trainer as trainer_module
            config = Config(model='BPR', dataset='tiny', config_dict={'data_path': %r})
            path = os.path.join(tempfile.mkdtemp(), 'ckpt.pth')
            torch.save({'config': config, 'state_dict': {}, 'best_valid_score': __import__('numpy').float64(0.5)},
                       path)
            # RecBole's trainer loads its checkpoints (which pickle the Config) with torch's safe default.
            assert trainer_module.torch is torch
            checkpoint = trainer_module.torch.load(path, map_location='cpu')
            assert checkpoint['config']['model'] == 'BPR' and checkpoint['best_valid_score'] == 0.5
            assert isinstance(checkpoint['config'], Config)  # a RestoredConfig: Config's __init__ never ran
            print('OK')
            """
            % DATA
        ),
        "weights_only",
    ),
    "shim_sine_anomaly": (
        "import torch\nfrom recbole.model.sequential_recommender import SASRec\n"
        "assert not torch.is_anomaly_enabled(), 'anomaly mode left on by the model import'\nprint('OK')",
        "anomaly mode left on",
    ),
    "shim_dok_update": (
        "import scipy.sparse as sp\nA = sp.dok_matrix((3, 3))\nA._update({(0, 1): 2.0, (2, 2): 1.0})\n"
        "assert A[0, 1] == 2.0 and A.nnz == 2\nprint('OK')",
        "_update",
    ),
    "shim_item_metrics": (
        textwrap.dedent(
            """
            from recbole.quick_start import run_recbole
            r = run_recbole(model='Pop', dataset='tiny', config_dict={
                'data_path': %r, 'metrics': ['Recall', 'ItemCoverage', 'GiniIndex'], 'topk': [5],
                'valid_metric': 'Recall@5', 'epochs': 1, 'state': 'ERROR', 'show_progress': False,
                'checkpoint_dir': __import__('tempfile').mkdtemp()})
            assert 0 < r['test_result']['itemcoverage@5'] <= 1
            print('OK')
            """
            % DATA
        ),
        "cpu",
    ),
}


def _run(skip, body):
    code = PRELUDE.format(skip=skip, compat=os.path.join(ROOT, "recbole_genrec", "compat.py"),
                          package=os.path.join(ROOT, "recbole_genrec")) + body
    with tempfile.TemporaryDirectory() as work:  # RecBole writes log/ into the working directory, not the checkout
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=work)


def _break_exists(shim):
    """Whether this stack has the break that ``shim`` repairs (the floor environment, numpy 1.24 / scipy 1.10, has
    neither of the two version-bound ones); the other scenarios break on every supported stack."""
    import numpy as np
    import scipy
    from packaging.version import Version

    return {"shim_numpy_aliases": Version(np.__version__) >= Version("2"),
            "shim_dok_update": Version(scipy.__version__) >= Version("1.15")}.get(shim, True)


@pytest.mark.slow
@pytest.mark.parametrize("shim", sorted(SCENARIOS))
def test_scenario_fails_without_shim(shim):
    if not _break_exists(shim):
        pytest.skip(f"{shim}: this stack does not have the break it repairs")
    body, expected = SCENARIOS[shim]
    proc = _run(shim, body)
    assert proc.returncode != 0, f"{shim}: scenario passed without the shim:\n{proc.stdout}"
    assert expected in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("shim", sorted(SCENARIOS))
def test_scenario_passes_with_all_shims(shim):
    body, _ = SCENARIOS[shim]
    proc = _run(None, body)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_apply_is_idempotent():
    import scipy.sparse as sp

    from recbole_genrec import compat

    compat.apply()
    first = sp.dok_matrix._update
    compat.apply()
    assert sp.dok_matrix._update is first
    import torch

    import recbole.trainer.trainer as trainer_module

    assert trainer_module.torch is torch  # no patched torch.load: RecBole loads with weights_only=True
    allowed = torch.serialization.get_safe_globals()
    assert len(allowed) == len({id(g) if not isinstance(g, tuple) else g[1] for g in allowed})  # registered once


def test_sine_import_keeps_a_users_anomaly_mode():
    """The shim restores the mode RecBole's import found: a user who turned anomaly mode on keeps it."""
    body = ("import torch\ntorch.autograd.set_detect_anomaly(True, check_nan=False)\n"
            "import recbole.model.sequential_recommender\n"
            "assert torch.is_anomaly_enabled() and not torch.is_anomaly_check_nan_enabled()\nprint('OK')")
    proc = _run(None, body)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
