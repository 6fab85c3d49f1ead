"""copytrace.descriptors."""
