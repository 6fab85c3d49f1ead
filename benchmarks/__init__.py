"""copytrace.benchmarks."""
