"""cinerec web service: app factory, settings, storage, auth, services and CLI."""
