"""`make bench`: the stream-level benchmarks of issue 7, kept apart from `make test`.

`python -m benchmarks.run` measures, writes `benchmarks/report.json` and renders `BENCHMARKS.md`.
Nothing here is imported by the pipeline or by its tests.
"""
