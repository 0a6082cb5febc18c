"""Keyframes as SVD conditioning: fitting, noise augmentation, CLIP vision + VAE encoding."""
