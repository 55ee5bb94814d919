"""The coordinator: the v3 REST API and everything it needs that is not rendering."""
