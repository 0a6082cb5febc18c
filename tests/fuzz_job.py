"""Runs in a subprocess (tests/test_host_fuzz.py): every pack node driven with generated input values through the
real host, in process (validate_prompt + PromptExecutor), on tiny models.

Each prompt must end as one of: the host's validation reject (the pack's validate_inputs included), the pack's input
error (InbetweenInputError: "<node>: input '<name>': ..."), or a run. A run is stopped at its first model call
unless it is small (the budget of this job: a CPU would take minutes for what a GPU does at once): the checks all
come before the first model call, and a run that gets there has passed them; a small run goes on to the end and
must decode exactly the frames asked for. Anything else is a
failure: hypothesis shrinks it and the job reports the smallest example.

The machine is made small (comfy.model_management.get_total_memory answers MACHINE_BYTES) so that what the pack
accepts stays cheap on the CPU and what it refuses is refused by its memory checks.

Usage: python fuzz_job.py JOB.json  -> one line "RESULT:{json}".
"""
from __future__ import annotations

import collections
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from host import setup_comfy  # noqa: E402

MACHINE_BYTES = 2**30  # the pack asks 256 MiB of head-room on top of each estimate
# A run whose model calls are small (input elements, e.g. 4 videos x 9 frames x 8 channels x 17 x 17) goes on for this
# many calls; any other run is stopped at its first.
SMALL_CALL, SMALL_RUN_CALLS = 4 * 9 * 8 * 17 * 17, 16
SLOW_S = 10  # an example that takes longer is listed in the result
MESSAGES: collections.Counter = collections.Counter()  # the pack's input errors met, by input
PACK_ERROR = "InbetweenInputError"


def prompt_conditioning(v: dict, weights: str) -> dict:
    """EmptyImage keyframes -> Conditioning -> (backward weights) -> Sampler -> VAEDecode -> PreviewImage."""
    model = ["w", 0] if v["use_weights"] else ["m", 0]
    return {
        "m": {"class_type": "SVDInbetweenTestTinyModels", "inputs": {"ckpt_name": "tiny"}},
        "a": {"class_type": "EmptyImage", "inputs": {"width": v["image_w"], "height": v["image_h"], "batch_size": 1,
                                                     "color": 0x3366AA}},
        "b": {"class_type": "EmptyImage", "inputs": {"width": v["image_h"], "height": v["image_w"], "batch_size": 1,
                                                     "color": 0xAA6633}},
        "w": {"class_type": "SVDInbetweenLoadBackwardWeights",
              "inputs": {"model": ["m", 0], "weights": v["weights"] or weights, "strength": v["strength"]}},
        "c": {"class_type": "SVDInbetweenConditioning", "inputs": {
            "clip_vision": ["m", 1], "vae": ["m", 2], "start_image": ["a", 0], "end_image": ["b", 0],
            "width": v["width"], "height": v["height"], "video_frames": v["frames"],
            "motion_bucket_id": v["motion_bucket_id"], "fps": v["fps"], "augmentation_level": v["augmentation"],
            "resize": v["resize"], "noise_seed": v["seed"]}},
        "s": {"class_type": "SVDInbetweenSampler", "inputs": {
            "model": model, "positive_start": ["c", 0], "negative_start": ["c", 1], "positive_end": ["c", 2],
            "negative_end": ["c", 3], "latent_image": ["c", 4], "seed": v["seed"], "steps": v["steps"],
            "cfg": v["cfg"], "mode": v["mode"], "recurrence": v["recurrence"], "recurrence_ratio": v["ratio"],
            "forward_weight": v["forward_weight"], "execution": v["execution"], "scheduler": v["scheduler"],
            "guidance": v["guidance"], "min_cfg": v["min_cfg"]}},
        "d": {"class_type": "VAEDecode", "inputs": {"samples": ["s", 0], "vae": ["m", 2]}},
        "p": {"class_type": "PreviewImage", "inputs": {"images": ["d", 0]}},
    }


def prompt_chain(v: dict, weights: str) -> dict:
    p = {
        "m": {"class_type": "SVDInbetweenTestTinyModels", "inputs": {"ckpt_name": "tiny"}},
        "w": {"class_type": "SVDInbetweenLoadBackwardWeights",
              "inputs": {"model": ["m", 0], "weights": weights, "strength": 1.0}},
        "s": {"class_type": "SVDInbetweenChain", "inputs": {
            "model": ["w", 0], "clip_vision": ["m", 1], "vae": ["m", 2], "width": v["width"], "height": v["height"],
            "frames": v["frames_text"], "motion_bucket_id": v["motion_bucket_id"], "fps": v["fps"],
            "augmentation_level": v["augmentation"], "resize": v["resize"], "seed": v["seed"], "steps": v["steps"],
            "cfg": v["cfg"], "mode": v["mode"], "recurrence": v["recurrence"], "recurrence_ratio": v["ratio"],
            "forward_weight": v["forward_weight"], "execution": v["execution"], "scheduler": v["scheduler"],
            "cfg_pp": v["cfg_pp"], "dds": v["dds"]}},
        "p": {"class_type": "PreviewImage", "inputs": {"images": ["s", 0]}},
    }
    for i, (w, h) in enumerate(v["keyframes"]):
        p[f"k{i}"] = {"class_type": "EmptyImage", "inputs": {"width": w, "height": h, "batch_size": 1,
                                                             "color": 0x224466 * (i + 1) % 0xFFFFFF}}
        p["s"]["inputs"][f"keyframe_{i + 1}"] = [f"k{i}", 0]
    return p


def prompt_custom(v: dict, weights: str) -> dict:
    """Guider + one of the pack's SAMPLERs in the stock SamplerCustomAdvanced."""
    sampler = {"euler": {"class_type": "SVDInbetweenRecurrentEuler",
                         "inputs": {"recurrence": v["recurrence"], "recurrence_ratio": v["ratio"]}},
               "vibid": {"class_type": "SVDInbetweenViBiDSampler", "inputs": {"cfg_pp": v["cfg_pp"], "dds": v["dds"]}},
               "mpd": {"class_type": "SVDInbetweenMPDSampler", "inputs": {
                   "mpd_distill_fraction": v["fraction"], "mpd_distill_iterations": v["iterations"],
                   "mpd_trf_distill_fraction": v["trf_fraction"], "mpd_trf_distill_iterations": v["iterations"],
                   "mpd_trf_repeats": v["repeats"], "cfg_pp": v["cfg_pp"], "dds": v["dds"]}}}[v["sampler"]]
    return {
        "m": {"class_type": "SVDInbetweenTestTinyModels", "inputs": {"ckpt_name": "tiny"}},
        "a": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 1}},
        "b": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 2}},
        "w": {"class_type": "SVDInbetweenLoadBackwardWeights",
              "inputs": {"model": ["m", 0], "weights": weights, "strength": 1.0}},
        "c": {"class_type": "SVDInbetweenConditioning", "inputs": {
            "clip_vision": ["m", 1], "vae": ["m", 2], "start_image": ["a", 0], "end_image": ["b", 0],
            "width": 64, "height": 64, "video_frames": v["frames"], "motion_bucket_id": 127, "fps": 7,
            "augmentation_level": 0.0, "resize": "crop", "noise_seed": 0}},
        "g": {"class_type": "SVDInbetweenGuider", "inputs": {
            "model": ["w", 0], "positive_start": ["c", 0], "negative_start": ["c", 1], "positive_end": ["c", 2],
            "negative_end": ["c", 3], "cfg": v["cfg"], "mode": v["mode"], "forward_weight": v["forward_weight"],
            "execution": v["execution"], "guidance": v["guidance"], "min_cfg": v["min_cfg"]}},
        "x": sampler,
        "n": {"class_type": "RandomNoise", "inputs": {"noise_seed": v["seed"]}},
        # the stock scheduler's own inputs are not this pack's to check (a denoise near 0 makes it loop for ever)
        "t": {"class_type": "BasicScheduler", "inputs": {"model": ["w", 0], "scheduler": "karras", "steps": 3,
                                                         "denoise": 1.0}},
        "s": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["n", 0], "guider": ["g", 0],
                                                                "sampler": ["x", 0], "sigmas": ["t", 0],
                                                                "latent_image": ["c", 4]}},
        "d": {"class_type": "VAEDecode", "inputs": {"samples": ["s", 0], "vae": ["m", 2]}},
        "p": {"class_type": "PreviewImage", "inputs": {"images": ["d", 0]}},
    }


def prompt_wan(v: dict, weights: str) -> dict:
    """EmptyImage keyframes (and anchors) -> Wan Keyframes to Video -> KSampler -> Wan Keyframe Decode. frames "fit":
    the smallest count that fits the layout and keyframes (so that some examples run to the end)."""
    if v["frames"] == "fit":
        v["frames"] = 6 + v["anchors"] if v["layout"] == "separate" else 9
    p = {
        "m": {"class_type": "SVDInbetweenTestTinyWanModel", "inputs": {"unet_name": v["unet"]}},
        "v": {"class_type": "SVDInbetweenTestTinyWanVAE", "inputs": {"vae_name": "tiny"}},
        "t": {"class_type": "SVDInbetweenTestTinyWanText", "inputs": {"text": "forward"}},
        "u": {"class_type": "SVDInbetweenTestTinyWanText", "inputs": {"text": "negative"}},
        "a": {"class_type": "EmptyImage", "inputs": {"width": v["image_w"], "height": v["image_h"], "batch_size": 1,
                                                     "color": 0x3366AA}},
        "b": {"class_type": "EmptyImage", "inputs": {"width": v["end_w"] or v["image_w"], "height": v["image_h"],
                                                     "batch_size": 1, "color": 0xAA6633}},
        "c": {"class_type": "SVDInbetweenWanKeyframes", "inputs": {
            "positive": ["t", 0], "negative": ["u", 0], "vae": ["v", 0], "start_image": ["a", 0],
            "end_image": ["b", 0], "width": v["width"], "height": v["height"], "frames": v["frames"],
            "layout": v["layout"], "batch_size": v["batch"], "start_strength": v["strength"],
            "end_strength": 1.0, "anchor_strength": v["anchor_strength"], "anchor_position": v["position"]}},
        "s": {"class_type": "KSampler", "inputs": {
            "model": ["m", 0], "seed": v["seed"], "steps": 1, "cfg": 3.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["c", 0], "negative": ["c", 1], "latent_image": ["c", 2],
            "denoise": 1.0}},
        "d": {"class_type": "SVDInbetweenWanDecode", "inputs": {"samples": ["s", 0], "vae": ["v", 0]}},
        "p": {"class_type": "PreviewImage", "inputs": {"images": ["d", 0]}},
    }
    if v["anchors"]:
        p["k"] = {"class_type": "EmptyImage", "inputs": {"width": v["image_w"], "height": v["image_h"],
                                                         "batch_size": v["anchors"], "color": 0x66AA33}}
        p["c"]["inputs"]["anchor_image"] = ["k", 0]
    return p


def prompt_wan_anchor(v: dict, weights: str) -> dict:
    """Two EmptyImage clips (a flat frame in the forward one) -> Wan Anchor Frame -> the anchor previewed."""
    return {
        "f": {"class_type": "EmptyImage", "inputs": {"width": v["image_w"], "height": v["image_h"],
                                                     "batch_size": v["forward"], "color": 0x3366AA}},
        "r": {"class_type": "EmptyImage", "inputs": {"width": v["end_w"], "height": v["image_h"],
                                                     "batch_size": v["reverse"], "color": 0xAA6633}},
        "x": {"class_type": "SVDInbetweenWanAnchor", "inputs": {"forward_video": ["f", 0], "reverse_video": ["r", 0],
                                                                "edge_frames": v["edge"], "lpips_net": v["net"]}},
        "p": {"class_type": "PreviewImage", "inputs": {"images": ["x", 0]}},
    }


def strategies():
    """Per graph: every input drawn over its declared range (with its extremes), then up to two inputs replaced by
    what a client can send beyond it (negative, huge, NaN, off-grid, unknown names)."""
    from hypothesis import strategies as st

    import comfy.samplers

    from svd_inbetween.attention_patch.modes import MODES
    from svd_inbetween.samplers.execution import EXECUTIONS

    def number(lo: float, hi: float):
        return st.one_of(st.floats(lo, hi), st.sampled_from([lo, hi]))

    def wild_number():
        return st.sampled_from([float("nan"), float("inf"), float("-inf"), -1.0, 1e30])

    wild_int = st.sampled_from([-1, 0, 2**63, 2**70, -2**70])
    size = st.one_of(st.sampled_from(range(64, 137, 8)), st.sampled_from([1024, 4096, 16384]))
    valid = dict(
        width=size, height=size, motion_bucket_id=st.integers(1, 1023), fps=st.integers(1, 1024),
        seed=st.integers(0, 2**64 - 1), augmentation=number(0, 10), resize=st.sampled_from(["crop", "stretch", "pad"]),
        steps=st.one_of(st.integers(0, 4), st.just(10000)), cfg=number(0, 100), mode=st.sampled_from(MODES),
        recurrence=st.one_of(st.integers(0, 3), st.just(100)), ratio=number(0, 1), forward_weight=number(0, 1),
        execution=st.sampled_from(EXECUTIONS), scheduler=st.sampled_from(comfy.samplers.SCHEDULER_NAMES),
        guidance=st.sampled_from(["constant", "linear"]), min_cfg=number(0, 100), cfg_pp=st.booleans(),
        dds=st.booleans())
    wild = dict(
        width=st.sampled_from([0, 7, 60, 65, 16392, 2**40]), height=st.sampled_from([0, 7, 60, 65, 16392, 2**40]),
        motion_bucket_id=wild_int, fps=wild_int, seed=wild_int, augmentation=wild_number(),
        resize=st.just("nope"), steps=st.sampled_from([-1, 10001, 2**70]), cfg=wild_number(), mode=st.just("nope"),
        recurrence=st.sampled_from([-1, 101, 2**70]), ratio=wild_number(), forward_weight=wild_number(),
        execution=st.just("nope"), scheduler=st.just("nope"), guidance=st.just("nope"), min_cfg=wild_number())
    image = st.integers(1, 300)

    @st.composite
    def case(draw, valid: dict, wild: dict):
        v = draw(st.fixed_dictionaries(valid))
        for key in draw(st.lists(st.sampled_from(sorted(wild)), max_size=2, unique=True)):
            v[key] = draw(wild[key])
        return v

    frame_counts = st.lists(st.one_of(st.integers(3, 9), st.sampled_from([2049, 4096])), min_size=1, max_size=6)
    return {
        "conditioning": case(
            dict(valid, frames=st.one_of(st.integers(3, 9), st.just(4096)), image_w=image, image_h=image,
                 use_weights=st.booleans(), strength=number(0, 2), weights=st.sampled_from([None, "missing.safetensors"])),
            dict(wild, frames=st.sampled_from([-1, 0, 2, 4097, 2**70]), strength=wild_number(),
                 weights=st.sampled_from(["../x.safetensors", ""]))),
        "chain": case(
            dict(valid, keyframes=st.lists(st.tuples(image, image), min_size=2, max_size=6),
                 frames_text=st.one_of(st.integers(3, 9).map(str), st.sampled_from(["2049", "4096"]),
                                       frame_counts.map(lambda xs: ",".join(map(str, xs))))),
            dict(wild, keyframes=st.lists(st.tuples(image, image), min_size=0, max_size=1),
                 frames_text=st.one_of(st.text(alphabet="0123456789, ;-x", max_size=24), wild_int.map(str)))),
        "custom": case(
            dict(valid, frames=st.integers(3, 9), sampler=st.sampled_from(["euler", "vibid", "mpd"]),
                 fraction=number(0, 1), trf_fraction=number(0, 1), iterations=st.integers(1, 100),
                 repeats=st.integers(0, 100)),
            dict(wild, frames=st.sampled_from([-1, 2, 2**70]), fraction=wild_number(), trf_fraction=wild_number(),
                 iterations=wild_int, repeats=wild_int)),
        "wan": case(
            dict(width=st.sampled_from([64, 64, 80, 96, 16384]), height=st.sampled_from([64, 64, 80, 96, 16384]),
                 frames=st.one_of(st.just("fit"), st.integers(2, 14), st.just(4096)),
                 layout=st.sampled_from(["separate", "inside"]),
                 batch=st.integers(1, 2), strength=number(0, 1), anchor_strength=number(0, 1),
                 position=st.one_of(st.just(-1), st.integers(0, 14)), anchors=st.integers(0, 2),
                 image_w=image, image_h=image, end_w=st.one_of(st.none(), image), seed=st.integers(0, 2**64 - 1),
                 unet=st.sampled_from(["tiny", "wan2.1_flf2v_tiny"])),
            dict(width=st.sampled_from([0, 8, 72, 16400, 2**40]), height=st.sampled_from([0, 8, 72, 16400]),
                 frames=st.sampled_from([-1, 0, 1, 4097, 2**70]), layout=st.just("nope"), batch=wild_int,
                 strength=wild_number(), anchor_strength=wild_number(), position=wild_int)),
        "wan_anchor": case(
            dict(forward=st.integers(1, 12), reverse=st.integers(1, 12), edge=st.integers(1, 6),
                 net=st.just("alex"), image_w=st.integers(32, 96), image_h=st.integers(32, 96),
                 end_w=st.integers(32, 96)),
            dict(edge=wild_int, net=st.just("nope"), forward=st.sampled_from([1, 4096]))),
    }


def expected_frames(kind: str, v: dict) -> int | None:
    if kind == "conditioning" or kind == "custom":
        return v["frames"]
    if kind == "wan":
        return v["frames"] * v["batch"]
    if kind == "wan_anchor":
        return 1
    counts = [int(p) for p in v["frames_text"].replace(";", ",").split(",") if p.strip()]
    segments = len(v["keyframes"]) - 1
    counts = counts * segments if len(counts) == 1 else counts
    return sum(counts) - (segments - 1)


def outcome(session, prompt: dict, kind: str, v: dict) -> str:
    """'reject', 'pack_error', 'stopped' or 'ran'; raises AssertionError on anything else."""
    from svd_inbetween.client.comfy_session import PromptFailed
    try:
        result = session.run(prompt)
    except PromptFailed as e:
        d = e.details
        if "node_errors" in d:
            return "reject"
        if not d.get("exception_type"):  # execution_interrupted: this job's stop after its first steps
            if any(ev == "execution_interrupted" for ev, _ in session.executor.status_messages):
                return "stopped"
        message = d.get("exception_message", "")
        assert d.get("exception_type", "").endswith(PACK_ERROR), \
            f"{d.get('node_type')} raised {d.get('exception_type')}: {message}\n{''.join(d.get('traceback', []))[-3000:]}"
        assert message.startswith(f"{d.get('node_type')}: input '") or message.split(": input '")[0].startswith(
            "SVDInbetween"), message
        MESSAGES[message.split(": ", 2)[1] if message.count(": ") >= 2 else message] += 1
        return "pack_error"
    images = [i for out in result.outputs.values() for i in out.get("images", [])]
    assert len(images) == expected_frames(kind, v), (len(images), expected_frames(kind, v))
    return "ran"


def job_fuzz(job: dict) -> dict:
    from hypothesis import HealthCheck, Phase, given, settings

    import comfy.model_base
    import comfy.model_management
    from comfy_job import prepare_base
    import execution
    from svd_inbetween.client.comfy_session import ComfySession, new_prompt_executor
    base = job["base"]
    weights = prepare_base(base)
    session = ComfySession(base_directory=base, cpu=True, extra_custom_nodes=(os.path.join(HERE, "tiny_pack"),))
    comfy.model_management.get_total_memory = lambda dev=None, torch_total_too=False: MACHINE_BYTES
    calls = [0]
    apply_model = comfy.model_base.BaseModel.apply_model

    def counted(self, x, *args, **kwargs):
        calls[0] += 1
        if x.numel() > SMALL_CALL or calls[0] > SMALL_RUN_CALLS:
            raise comfy.model_management.InterruptProcessingException()
        return apply_model(self, x, *args, **kwargs)
    comfy.model_base.BaseModel.apply_model = counted
    builders = {"conditioning": prompt_conditioning, "chain": prompt_chain, "custom": prompt_custom,
                "wan": prompt_wan, "wan_anchor": prompt_wan_anchor}
    counts: dict = {}
    failures = {}
    slow: list = []
    for kind, strategy in strategies().items():
        seen = counts.setdefault(kind, {})

        @settings(max_examples=job["examples"], deadline=None, database=None, derandomize=job.get("derandomize", True),
                  suppress_health_check=list(HealthCheck), phases=[p for p in Phase if p != Phase.explain])
        @given(strategy)
        def check(v):
            calls[0] = 0
            # a fresh executor: cached outputs of an identical earlier prompt (hypothesis replays examples) are not
            # reported again by every host (0.8 leaves them out of the history)
            session.executor = new_prompt_executor(execution, session.server)
            start = time.monotonic()
            result = outcome(session, builders[kind](v, weights), kind, v)
            seen[result] = seen.get(result, 0) + 1
            if time.monotonic() - start > SLOW_S:
                slow.append([kind, result, round(time.monotonic() - start, 1), v])
        try:
            check()
        except Exception as e:  # hypothesis re-raises the shrunk failure, its example in the notes
            failures[kind] = "".join(traceback.format_exception_only(type(e), e))[-4000:] + "\n".join(
                getattr(e, "__notes__", []))
    return {"counts": counts, "failures": failures, "inputs": dict(MESSAGES), "slow": slow}


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    setup_comfy()
    print("RESULT:" + json.dumps({"fuzz": job_fuzz}[job["kind"]](job)))


if __name__ == "__main__":
    main()
