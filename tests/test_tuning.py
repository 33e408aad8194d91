"""RecBole's HyperTuning works with every algorithm (exhaustive, random, bayes) on today's hyperopt and numpy.

The break (exhaustive search hands hyperopt a ``RandomState``, hyperopt>=0.2.7 calls ``rng.integers``) and its shim,
``recbole_genrec.compat.shim_hyperopt_rng``, are checked directly; then full HyperTuning runs, with a cheap objective
of the same contract as ``objective_function`` and (slow) with the real one on the tiny data set.
"""

import numpy as np
import pytest

import recbole_genrec  # noqa: F401  (the shims first: hyperopt 0.2.7 imports pkg_resources)
from recbole_genrec import compat

pytest.importorskip("hyperopt", reason="tuning needs the [tune] extra: pip install '.[tune]'")

SPACE = {"choice": {"learning_rate": [0.01, 0.001, 0.1], "embedding_size": [8, 16]}}
BEST = {"learning_rate": 0.001, "embedding_size": 16}


def fake_objective(config_dict, config_file_list=None, saved=True):
    """Same contract as ``recbole_genrec.objective_function``; the score is highest at ``BEST``."""
    score = 1.0 - abs(np.log10(config_dict["learning_rate"]) + 3) - abs(config_dict["embedding_size"] - 16) / 16
    return {"model": "BPR", "best_valid_score": float(score), "valid_score_bigger": True,
            "best_valid_result": {"recall@10": score}, "test_result": {"recall@10": score}}


def tuning(algo, objective=fake_objective, **kwargs):
    from recbole.trainer import HyperTuning

    kwargs.setdefault("max_evals", 6)
    return HyperTuning(objective, params_dict=SPACE, algo=algo, early_stop=100, **kwargs)


def test_integers_follows_generator_semantics():
    """The shim's ``RandomState.integers``: half-open ``[low, high)``, one-argument form ``[0, low)``, ``endpoint``
    closes the range, ``size`` and ``dtype`` as in ``Generator.integers``."""
    rng = compat._RandomStateWithIntegers(0)
    draws = rng.integers(3, 7, size=2000)
    assert draws.dtype == np.int64 and set(draws.tolist()) == {3, 4, 5, 6}
    assert set(rng.integers(4, size=2000).tolist()) == {0, 1, 2, 3}
    assert set(rng.integers(1, 3, size=2000, endpoint=True).tolist()) == {1, 2, 3}
    assert rng.integers(5, size=(2, 3), dtype=np.int32).shape == (2, 3)
    assert np.ndim(rng.integers(10)) == 0
    # seeded like RandomState: the same seed gives the same draws
    assert compat._RandomStateWithIntegers(1).integers(100, size=5).tolist() == \
        np.random.RandomState(1).randint(0, 100, size=5).tolist()


def test_exhaustive_search_fails_without_the_shim(monkeypatch):
    """Without the shim, RecBole's exhaustive search on this hyperopt dies on ``RandomState.integers``."""
    import recbole.trainer.hyper_tuning as hyper_tuning

    if hasattr(np.random.RandomState, "integers"):
        pytest.skip("this numpy's RandomState has `integers`: nothing to shim")
    monkeypatch.setattr(hyper_tuning, "np", np)
    with pytest.raises(AttributeError, match="integers"):
        tuning("exhaustive").run()


@pytest.mark.parametrize("algo", ["exhaustive", "random", "bayes"])
def test_every_algorithm_finds_the_best_parameters(algo, monkeypatch):
    monkeypatch.setenv("HYPEROPT_FMIN_SEED", "3")  # fmin's seed: random/bayes draw the same trials every run
    tuner = tuning(algo, max_evals=40)
    tuner.run()
    if algo == "exhaustive":  # each of the 3 x 2 combinations exactly once, then it stops
        assert tuner.max_evals == 6 and len(tuner.params_list) == 6 and len(set(tuner.params_list)) == 6
    else:
        assert len(tuner.params_list) == 40
    assert tuner.best_params == BEST
    assert tuner.best_score == pytest.approx(fake_objective(BEST)["best_valid_score"]) == max(tuner.score_list)


def test_shim_is_idempotent_and_local():
    import recbole.trainer.hyper_tuning as hyper_tuning

    proxy = hyper_tuning.np
    compat.shim_hyperopt_rng()
    compat._APPLIED.discard("shim_hyperopt_rng")
    compat.shim_hyperopt_rng()  # a second application does not wrap the proxy again
    assert hyper_tuning.np is proxy
    assert hyper_tuning.np.random.RandomState is compat._RandomStateWithIntegers
    assert hyper_tuning.np.random.default_rng is np.random.default_rng  # the rest of numpy shows through
    assert np.random.RandomState is not compat._RandomStateWithIntegers  # the global numpy is untouched


@pytest.mark.slow
def test_exhaustive_tuning_of_a_real_model(tmp_path):
    """``HyperTuning`` + ``recbole_genrec.objective_function`` on tests/data/tiny: BPR, 2 learning rates, 1 epoch."""
    import yaml
    from conftest import TINY_LOAD_COL, recbole_argv, tiny_settings
    from recbole.trainer import HyperTuning

    from recbole_genrec import objective_function

    fixed = tmp_path / "fixed.yaml"
    settings = tiny_settings(tmp_path, model="BPR", dataset="tiny", epochs=1, load_col=TINY_LOAD_COL, metrics=["Recall"],
                             topk=[5], valid_metric="Recall@5")
    fixed.write_text(yaml.safe_dump(settings))
    params = tmp_path / "params.hyper"
    params.write_text("learning_rate choice [0.01,0.001]\n")
    with recbole_argv():
        tuner = HyperTuning(objective_function, params_file=str(params), fixed_config_file_list=[str(fixed)],
                            algo="exhaustive")
        tuner.run()
    assert tuner.max_evals == 2 and len(tuner.params2result) == 2
    assert {"learning_rate:0.01", "learning_rate:0.001"} == set(tuner.params_list)
    assert all("recall@5" in result["test_result"] for result in tuner.params2result.values())
