"""Adapters that bring dualoptim's optimizers and phase logic into other training loops."""
