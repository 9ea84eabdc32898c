"""Features as data: the declared spec (spec.py) and its one evaluator (evaluate.py)."""
