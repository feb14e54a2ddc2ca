"""Portcullis: an API gateway and API-management platform."""

__version__ = "0.1.0"
