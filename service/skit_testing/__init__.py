"""Fakes and fixtures for tests only; never installed in a production image."""
