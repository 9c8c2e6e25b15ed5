"""Customer lifetime value for retail banks, in stages that each import only the ones below them:

common (files, dates, where work runs) < data (the contract and the bank in memory) < synthetic (a generated
bank) and model (features, labels, the estimator, its card and artifacts) < batch (a whole bank scored) <
service (the HTTP app and its settings); cli serves the command lines. docs/architecture.md draws it."""

__version__ = "0.1.0"
