"""Safety alignment as unlearning (SPEC §2.5): refuse harmful instructions, stay helpful."""
