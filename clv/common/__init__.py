"""Plumbing every stage uses and that knows nothing of banks or models: files written whole under a temporary
name (io), the calendar of month numbers and days (dates), and where work runs, in this process or on a Dask
cluster (cluster)."""
