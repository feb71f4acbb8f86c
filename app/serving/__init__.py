"""Serving the models: the recommendation pipeline and its pages (lists, the home page, similar
movies, search), explanations and their streams, the champion holders, users' histories,
filters and signed tokens."""
