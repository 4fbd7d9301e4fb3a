"""segdl benchmark suite: see benchmarks/README.md; entry point benchmarks/run.py."""
