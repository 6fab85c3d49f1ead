"""copytrace.pipelines."""
