"""Pure, synchronous state machines: every method takes ``now``; no I/O, no clock, no anyio.

A test enforces that nothing in this package imports anyio or reads a clock.
"""
