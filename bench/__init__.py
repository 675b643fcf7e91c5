"""Benchmarks: each prints the product's figure beside a reference measured in the same run."""
