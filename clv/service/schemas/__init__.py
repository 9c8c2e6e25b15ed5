"""The HTTP contract in one place: what a caller sends (requests) and what the service answers (responses)."""
