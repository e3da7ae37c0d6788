"""Self-contained experiments that check the paper's claims on problems small enough for a CPU."""
