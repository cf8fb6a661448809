"""Changing tasks from outside the engine: enqueue, steering calls and the sweeper."""
