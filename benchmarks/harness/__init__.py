"""The parts of ``benchmarks/run.py``, one job a module.

* :mod:`.common`   paths, progress lines, machine facts, JSON-safe values: what every part uses;
* :mod:`.datasets` where a dataset's atomic files are, and truncated copies for ``--max-users``;
* :mod:`.rows`     the preset's rows after the CLI's filters and overrides, each run in a subprocess under timeouts;
* :mod:`.worker`   the body of that subprocess: one ``run_recbole_genrec`` call with timing hooks;
* :mod:`.reports`  the json / md / png reports and the README results blocks;
* :mod:`.scripts`  presets that call a stand-alone ``*_bench.py`` script;
* :mod:`.bundle`   ``--make-bundle``: data, cached embeddings / codes and wheels for a bare GPU machine.
"""
