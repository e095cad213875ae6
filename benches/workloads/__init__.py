"""Programs the benchmarks run in a fresh interpreter, each doing one measured job.

Each module here is run as ``python -m benches.workloads.<name> ARGS...`` by
``benches/bench_targets.py``, so that what it measures (CPU with
``getrusage``, the peak RSS with ``VmHWM``) is the job's alone, not pytest's.
Each prints one line of JSON: its usage read before and after the work
(``benches.workloads.usage``), and what the caller checks the work by.

This package must stay free of imports: every module imported before the
work counts in the peak RSS of target 4.
"""
