"""The ``micropen`` command line and bench tools."""
