"""Unit tests: the hub in this process against the test database, no long-running processes."""
