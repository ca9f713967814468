"""Clients of a running server: the load generator that replays workloads and scores QoE."""
