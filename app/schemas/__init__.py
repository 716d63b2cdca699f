"""Pydantic models of request and response bodies; their docstrings and field
descriptions are the OpenAPI document's schema descriptions."""
