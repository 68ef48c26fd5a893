"""Tag2Text for Hugging Face transformers (placeholder while the core lands)."""
