"""The server: the app factory and lifespan, the GraphQL endpoint, websockets, the web client,
persisted queries, body limits and who the caller is."""
