"""The model, from a bank to a saved, judged artifact: features as of a date (features), the future value they
are trained to predict (labels), the estimator with its interval and drivers (estimator, fitting, conformal,
attributions, trees), the metrics and model card (metrics, card), the drift reference (monitoring), versioned
artifacts (artifacts) and the honest training protocol (training). Knows no service."""
