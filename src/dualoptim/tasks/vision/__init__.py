"""Image classification: forget splits, methods, metrics, runs (SPEC §2.1, §3.1); its data
sets, classifiers and their training are in ``dualoptim.tasks.images``."""
