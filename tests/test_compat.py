"""Each compat shim repairs a real break: the scenario fails without that shim and passes with it.

Every scenario runs in a fresh interpreter that applies all shims except the one under test.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")

PRELUDE = textwrap.dedent(
    """
    import importlib.util, sys
    skip = {skip!r}
    if skip == "shim_pkg_resources":
        # Simulate setuptools>=81, which no longer ships pkg_resources.
        sys.modules["pkg_resources"] = None
    spec = importlib.util.spec_from_file_location("genrec_compat", {compat!r})
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    for name in ["shim_pkg_resources", "shim_numpy_aliases", "shim_torch_load", "shim_dok_update",
                 "shim_item_metrics"]:
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
    "shim_torch_load": (
        textwrap.dedent(
            """
            import tempfile, os, torch
            from recbole.config import Config
            import recbole.trainer.trainer as trainer_module
            config = Config(model='BPR', dataset='tiny', config_dict={'data_path': %r})
            path = os.path.join(tempfile.mkdtemp(), 'ckpt.pth')
            torch.save({'config': config, 'state_dict': {}}, path)
            # RecBole's trainer loads its checkpoints (which pickle the Config) through this name.
            checkpoint = trainer_module.torch.load(path, map_location='cpu')
            assert checkpoint['config']['model'] == 'BPR'
            print('OK')
            """
            % DATA
        ),
        "weights_only",
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
    code = PRELUDE.format(skip=skip, compat=os.path.join(ROOT, "recbole_genrec", "compat.py")) + body
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)


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
    import recbole.trainer.trainer as trainer_module

    assert isinstance(trainer_module.torch, compat._TorchWithTrustedLoad)
    assert not isinstance(trainer_module.torch._torch, compat._TorchWithTrustedLoad)
