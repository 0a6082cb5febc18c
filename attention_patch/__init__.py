"""The patched SVD UNet: what each mode means (modes.py), capturing, rotating (rot180) and
injecting the temporal attention maps (proxy.py, rotation.py, run_state.py), and the
object patches a clone carries (layers.py: proxies, per-video feed-forwards, lowvram's
pieces, the calibrated memory estimate). Plain torch on ComfyUI's modules; nothing here
imports from samplers/."""
