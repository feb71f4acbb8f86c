"""Infrastructure every wing uses: settings, the database and its tables, migrations, the two
cache levels, the coalescer, announcements between replicas, throttles, auth, metrics, errors
and the app's way to the MLflow registry."""
