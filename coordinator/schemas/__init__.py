"""Pydantic request and response shapes of the v3 API (camelCase on the wire)."""
