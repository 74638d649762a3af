"""USR benchmark suite (issue 5): `python -m benchmarks.run --help`."""
