"""Tasks: vision, diffusion, LLM — each adds data, models, methods and metrics."""
