"""The variance study behind ``dualoptim demo``: shared vs decoupled momentum on a CPU-sized
problem, the check of the talk's variance theorem."""
