"""Speed and memory benchmarks (``python -m benchmarks`` or ``meta-rl bench``); not timed tests."""
