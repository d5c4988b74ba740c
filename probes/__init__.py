"""Probes: one module per protocol, one signature, one registry (see registry.py)."""

from probes.base import ProbeOptions, ProbeResult, ProbeSpec

__all__ = ["ProbeOptions", "ProbeResult", "ProbeSpec"]
