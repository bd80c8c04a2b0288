"""Data sources, the built-in standard-library corpus and tasks, conversation formats, and packing."""
