"""Benchmarks (pytest-benchmark).  Not part of the CI test command: run
`pytest bench` (CPU) or bench/gpu/device_check.sh (GPU).  Targets are ratios
against peers timed in the same run; see thyrofast/bench/."""
