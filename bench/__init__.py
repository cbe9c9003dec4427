"""`make bench`: numbers that show what async safety buys. Run with `python -m bench`.

It measures and records; it never asserts timings. The machine is shared and
noisy, so every comparison is a ratio of numbers measured side by side in one run.
"""
