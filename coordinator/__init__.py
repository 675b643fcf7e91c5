"""Headquarters side of plantfed: rounds, health, aggregation, campaigns and the CLI."""
