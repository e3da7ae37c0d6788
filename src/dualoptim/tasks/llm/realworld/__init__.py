"""Real-world knowledge unlearning (SPEC §2.4): people an instruction-tuned model already knows."""
