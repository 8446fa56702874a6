"""Test support: the channel conformance suite and real servers for tests."""
