"""The YAML recipes and the scripts that launch them; shipped in the wheel as hf_recipes.recipes."""
