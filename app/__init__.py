"""cinerec web service, in four wings: ``server`` (the app factory, the GraphQL endpoint,
websockets, the web client), ``serving`` (the recommendation pipeline, explanations, the
champion models), ``services`` (catalog, ratings, accounts, experiments, training) and
``infra`` (settings, database, cache, limits, auth, metrics); ``cli`` is the command line."""
