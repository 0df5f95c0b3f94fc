"""The HTTP API: one module per resource of the contract."""
