"""Pure decisions and values: states, the planner, backoff, views. No I/O here."""
