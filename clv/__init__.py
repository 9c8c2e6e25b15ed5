"""Shared code of the CLV system: schema, features, metrics, artifacts and settings."""
