"""Capture, rotate (rot180) and inject temporal attention maps in ComfyUI's SVD UNet."""
