"""The `tasker` command line."""
