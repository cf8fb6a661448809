"""Defining work: task handlers, step templates, requests, the registry and DAG checks."""
