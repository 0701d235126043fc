"""Test fixtures shipped with the package: tiny random models of real architectures, for tests and benchmarks."""
