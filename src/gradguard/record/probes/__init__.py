"""Probes: each measures one family of metrics, owns its hooks and buffers, writes rows by metric
name into the step buffer, and says how its rows combine across ranks."""
