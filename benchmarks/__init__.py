"""brace's benchmark suite: brace against the event loop's floor and the peer libraries.

Run ``python -m benchmarks --help``. The harness is in ``_harness.py``; each benchmark
(``bucket``, ``hit``, ``breaker``, ``retry``, ``executor``, and the ``floor``) is a module
listing its cases, the floors its table shows, and its targets.
"""
