"""cinerec machine learning: data reading and validation, features, models, evaluation.

Nothing in ``ml`` imports web code.
"""
