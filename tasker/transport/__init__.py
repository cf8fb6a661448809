"""Dispatch: the broker glue and the worker processes."""
