"""Host SDK."""
