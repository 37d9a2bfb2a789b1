"""Benchmark programs: the workloads, the copying baselines, and how they are measured."""
