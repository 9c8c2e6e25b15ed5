"""The HTTP service: the app's state and the model it follows (serving), the routes and page (web), the
metrics and drift window of /metrics (telemetry), the typed answers (responses), and the settings read
from CLV_* variables (settings)."""
