"""`svd-inbetween bench`: the pack's one-model execution against the research code's two-model scheme.

runner.py runs the schemes on one model, seed and input; reference.py is the research
scheme rebuilt for comparison; fullsize.py does the full-size SVD-XT accounting on the
meta device; measure.py holds the meters. Results and their meaning: RESULTS.md.
"""
