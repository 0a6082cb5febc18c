"""Scoring generated in-betweens against ground-truth clips (paper Sec. 5.1-5.2).

data.py      ground-truth videos / frame folders and keyframe-pair selection
frechet.py   Fréchet distance between feature Gaussians (FID, FVD)
metrics.py   per-frame PSNR, SSIM
features.py  pretrained extractors (Inception, I3D / VideoMAE, LPIPS) from local weight files
harness.py   generate -> score -> cache loop, resumable from the CSV
report.py    CSV, markdown table, LPIPS-along-the-clip plot, contact sheets
"""
