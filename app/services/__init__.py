"""Business logic and SQL that is not model serving: catalog, ratings, accounts, experiments,
drift, training, ingest. Resolvers and the CLI call these with keyword arguments."""
