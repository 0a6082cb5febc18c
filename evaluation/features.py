"""Pretrained networks behind LPIPS, FID and FVD, built only from weight files already on disk.

Each metric library would download its weights on first use; here nothing is downloaded. A file is taken from the
path given on the command line, else from the place the library itself caches it on a user's machine, else the
error names the exact file, where it comes from and where to put it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


class MissingWeights(ValueError):
    pass


class MissingPackage(ValueError):
    pass


@dataclass(frozen=True)
class WeightFile:
    what: str
    filename: str
    url: str
    flag: str


INCEPTION = WeightFile("FID (torch-fidelity InceptionV3, the TF-FID network)", "weights-inception-2015-12-05-6726825d.pth",
                       "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                       "weights-inception-2015-12-05-6726825d.pth", "--fid-weights")
VIDEOMAE = WeightFile("content-debiased FVD (cd-fvd VideoMAE-v2 ViT-g)", "vit_g_hybrid_pt_1200e_ssv2_ft.pth",
                      "https://pjlab-gvm-data.oss-cn-shanghai.aliyuncs.com/internvideo/videomaev2/"
                      "vit_g_hybrid_pt_1200e_ssv2_ft.pth", "--fvd-weights")
I3D = WeightFile("FVD (cd-fvd I3D)", "i3d_pretrained_400.pt",
                 "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt", "--fvd-weights")
LPIPS_BACKBONES = {
    "alex": WeightFile("LPIPS (AlexNet backbone, torchvision)", "alexnet-owt-7be5be79.pth",
                       "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "--lpips-weights"),
    "vgg": WeightFile("LPIPS (VGG16 backbone, torchvision)", "vgg16-397923af.pth",
                      "https://download.pytorch.org/models/vgg16-397923af.pth", "--lpips-weights"),
}
PACKAGES = {"lpips": "lpips", "torch_fidelity": "torch-fidelity", "cdfvd": "cd-fvd"}


def _require(module: str, metric: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingPackage(f"eval: {metric} needs the Python package '{PACKAGES[module]}': "
                             f"pip install '{PACKAGES[module]}' (or the pack's [eval] extra), or leave {metric} out of --metrics")


def _hub_checkpoints() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _cdfvd_dir(sub: str) -> str:
    spec = importlib.util.find_spec("cdfvd")
    root = list(spec.submodule_search_locations)[0] if spec else "<site-packages>/cdfvd"
    return os.path.join(root, "third_party", sub)


def find_weights(spec: WeightFile, given: str | None, caches: list[str]) -> str:
    """The weight file: `given`, else `spec.filename` in one of `caches`; never downloads."""
    if given:
        if os.path.isfile(given):
            return given
        raise MissingWeights(f"eval: {spec.flag} {given}: file not found; {spec.what} needs {spec.filename} from {spec.url}")
    for folder in caches:
        path = os.path.join(folder, spec.filename)
        if os.path.isfile(path):
            return path
    raise MissingWeights(f"eval: {spec.what} needs {spec.filename}, which is not on this machine (looked in "
                         f"{', '.join(caches)}). Download {spec.url} and pass {spec.flag} PATH, or put it in {caches[0]}; "
                         "or leave this metric out of --metrics")


def _batched(fn, x, batch: int) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)]).astype(np.float64)


class InceptionFeatures:
    """2048-d pool features of the TF-FID InceptionV3 (torch-fidelity), uint8 frames [N, H, W, 3] -> [N, 2048]."""

    def __init__(self, weights: str | None = None, device: str = "cpu", batch: int = 32):
        _require("torch_fidelity", "fid")
        path = find_weights(INCEPTION, weights, [_hub_checkpoints()])
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        self.model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
        self.model.to(device)
        self.device, self.batch, self.name = device, batch, f"inception2048:{os.path.basename(path)}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        def run(x):
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(self.device)
            return self.model(t)[0].double().cpu().numpy()
        return _batched(run, frames, self.batch)


class VideoFeatures:
    """cd-fvd's clip features: VideoMAE-v2 (content-debiased FVD, 16 frames) or I3D logits (classic FVD)."""

    def __init__(self, model: str = "videomae", weights: str | None = None, device: str = "cpu", batch: int = 4):
        _require("cdfvd", "fvd")
        if model == "videomae":
            path = find_weights(VIDEOMAE, weights, [_cdfvd_dir("VideoMAEv2")])
            from cdfvd.third_party.VideoMAEv2.utils import load_videomae_model
            self.model = load_videomae_model(torch.device(device), path).eval()
        elif model == "i3d":
            path = find_weights(I3D, weights, [_cdfvd_dir("i3d")])
            from cdfvd.third_party.i3d.utils import load_i3d_model
            self.model = load_i3d_model(torch.device(device), path).eval()
        else:
            raise ValueError(f"eval: --fvd-model must be videomae or i3d, got {model!r}")
        self.kind, self.device, self.batch = model, device, batch
        self.name = f"{model}:{os.path.basename(path)}"

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        if self.kind == "videomae":
            from cdfvd.third_party.VideoMAEv2.utils import preprocess_videomae
            # the ViT-g position embedding is built for 16 frames: resample each clip to 16
            idx = np.round(np.linspace(0, clips.shape[1] - 1, 16)).astype(int)
            return _batched(lambda x: self.model.forward_features(preprocess_videomae(x[:, idx]).to(self.device))
                            .double().cpu().numpy(), clips, self.batch)
        from cdfvd.third_party.i3d.utils import preprocess_i3d
        return _batched(lambda x: self.model(preprocess_i3d(x).to(self.device)).double().cpu().numpy(), clips, self.batch)


class LpipsDistance:
    """LPIPS v0.1 per frame, [T, H, W, 3] in [0, 1] twice -> [T]. The linear heads ship inside the lpips wheel; the
    ImageNet backbone is read from torchvision's weight file instead of letting torchvision download it."""

    def __init__(self, net: str = "alex", weights: str | None = None, device: str = "cpu"):
        _require("lpips", "lpips")
        if net not in LPIPS_BACKBONES:
            raise ValueError(f"eval: --lpips-net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
        path = find_weights(LPIPS_BACKBONES[net], weights, [_hub_checkpoints()])
        import lpips
        self.model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        load_backbone(self.model, torch.load(path, map_location="cpu", weights_only=True))
        self.model.to(device).eval()
        self.device, self.name = device, f"lpips-{net}:{os.path.basename(path)}"

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x, y = (t.float().movedim(-1, 1).to(self.device) for t in (a, b))
            return self.model(x, y, normalize=True).flatten().double().cpu()


def load_backbone(model: torch.nn.Module, state: dict) -> None:
    """torchvision `features.<i>.*` tensors into lpips' `net.slice<k>.<i>.*` (same layer index <i>)."""
    target = model.state_dict()
    mapped = {}
    for key in target:
        parts = key.split(".")
        if parts[0] == "net" and parts[1].startswith("slice"):
            src = "features." + ".".join(parts[2:])
            if src not in state:
                raise MissingWeights(f"eval: LPIPS backbone file lacks {src}; pass torchvision's ImageNet weights file")
            mapped[key] = state[src]
    if not mapped:
        raise MissingWeights("eval: LPIPS backbone file matched no layer; pass torchvision's ImageNet weights file")
    model.load_state_dict(mapped, strict=False)
