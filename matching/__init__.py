"""copytrace.matching."""
