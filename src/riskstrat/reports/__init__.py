"""The model card and the evaluation plots."""
