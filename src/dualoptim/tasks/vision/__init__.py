"""Image classification: data, models, methods and metrics (SPEC §2.1, §3.1)."""
