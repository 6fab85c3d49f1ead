"""copytrace.indexing."""
