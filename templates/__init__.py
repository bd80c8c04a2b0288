"""Chat templates and the model card template; ships inside the wheel as `hf_recipes.templates`."""
