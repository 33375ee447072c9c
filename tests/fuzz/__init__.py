"""Property-based (Hypothesis) tests of the public endpoints, in this process."""
