"""Dual-direction guidance and the recurrent Euler sampler (needs ComfyUI importable)."""
