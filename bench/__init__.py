"""runner's benchmark suite: `make bench`, or `.venv/bin/python -m bench`.

Every figure is a ratio or a throughput measured within one run, from the
median of several alternated repetitions, so that it holds on a noisy shared
machine. One module per figure; each has ``run(quick: bool) -> dict`` giving
its keys of ``bench/results.json``. ``bench.report`` turns the results into
the printed table and ``BENCHMARKS.md``.
"""
