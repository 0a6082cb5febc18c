"""Sampling on the dual-direction guider (needs ComfyUI importable).

run.py and chain.py are the facades the nodes call; they check every input once
(validation.py) and build a guider (guider.py, chain_guider.py) with the SAMPLER the
mode's schedule needs (recurrent_euler.py: fused; vibid.py: alternating; mpd.py: the MPD
schedules, built from vibid.py's request steps). The other
modules are the plain pieces those use; imports run one way (tests/test_import_graph.py).
"""
