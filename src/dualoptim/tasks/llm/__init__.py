"""Large language models (TOFU): data, models, methods and metrics."""
