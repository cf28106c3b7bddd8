"""Built-in and test models."""
