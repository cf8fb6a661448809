"""The database: schema, connections, the hot-write stores, queries and migrations."""
