"""Benchmarks of recbole-genrec: ``run.py`` (the CLI), ``harness/`` (its parts), ``presets.py`` and the stand-alone
``*_bench.py`` scripts. A package so that tests import ``benchmarks.harness`` and ``benchmarks.presets``."""
