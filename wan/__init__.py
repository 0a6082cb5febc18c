"""Keyframe inbetweening on Wan 2.x: the keyframe layouts, their VAE pieces and Anchor Frame Bridging's anchor.

A room of its own beside the SVD rooms: it imports shared pieces (evaluation's LPIPS) one way, and no SVD module
imports it.
"""
