"""`evaluate` metric modules, loaded by file path with `evaluate.load(<path>)` so nothing is downloaded."""
