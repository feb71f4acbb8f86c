"""Business logic and SQL. Resolvers and the CLI call these with keyword arguments."""
