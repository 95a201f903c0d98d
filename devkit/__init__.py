"""What tests and benchmarks share: generated checkpoints and measuring tools (never shipped)."""
