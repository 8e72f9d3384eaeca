"""Orchestration: wires the stages (sources, imaging, faces, store, index) together."""
