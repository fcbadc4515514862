"""FID with pytorch-fid's Inception network: pool3 features [N, 2048] and their Frechet distance.

pytorch-fid 0.3.0 has no weights-path argument; it loads its weights through torch.hub's cache
(`inception_weights_path()`, under TORCH_HOME). Offline, with no weights there, `load_inception`
raises `InceptionUnavailable` with a one-line reason (the path and the URL to fetch), and the
caller reports FID as "not computed" rather than a made-up number.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3

from ..progress import Progress
from .frechet import feature_statistics, frechet_distance

POOL3_DIM = 2048


class InceptionUnavailable(FileNotFoundError):
    """The FID Inception weights are neither in torch.hub's cache nor fetchable; the message is one line."""


def inception_weights_path() -> Path:
    """Where torch.hub's cache (TORCH_HOME/hub/checkpoints) expects pytorch-fid's FID weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(FID_WEIGHTS_URL).path).name


def _one_line(err: BaseException, limit: int = 200) -> str:
    """The error's type and message on one line (load_state_dict's spans many), cut to `limit` characters."""
    text = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_inception(device: str | torch.device = "cpu", allow_download: bool = False) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 returning pool3 features, in eval mode on `device`.

    Input [B, 3, H, W] floats in [0, 1]; it resizes to 299x299 and rescales to [-1, 1] itself.
    Loads the cached weights file without the network; without one, downloads it only when
    `allow_download`, else raises InceptionUnavailable. A failed download or an unreadable file
    also raises InceptionUnavailable.
    """
    path = inception_weights_path()
    if not path.is_file() and not allow_download:
        raise InceptionUnavailable(
            f"FID not computed: Inception weights not found at {path} (download {FID_WEIGHTS_URL} there)"
        )
    try:
        if path.is_file():
            # pytorch-fid unpickles the cached file without weights_only: check first that it
            # holds tensors only, so a planted file cannot run code.
            torch.load(path, map_location="cpu", weights_only=True)
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[POOL3_DIM]])
    except Exception as err:  # a network error or whatever unpickling raises: no FID either way
        if path.is_file():
            reason = f"Inception weights at {path} are unreadable ({_one_line(err)}); delete the file"
        else:
            reason = f"Inception weights not found at {path} and the download failed ({_one_line(err)})"
        raise InceptionUnavailable(f"FID not computed: {reason} (download {FID_WEIGHTS_URL} there)") from err
    return model.eval().to(device)


@torch.inference_mode()
def inception_features(
    images: np.ndarray,
    model: torch.nn.Module,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Pool3 features float64 [N, 2048] of uint8 images [N, H, W, C], C = 1 (greyscale) or 3 (RGB).

    Greyscale is repeated to 3 channels; pixels are scaled to [0, 1], the input range pytorch-fid's
    InceptionV3 expects before its own resize and normalisation.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(
            f"images must be uint8 [N >= 1, H, W, C in {{1, 3}}], got {images.dtype} shape {images.shape}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bar = Progress("inception", len(images), "img", enabled=progress)
    features = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device)
        x = batch.permute(0, 3, 1, 2).float().div(255.0).expand(-1, 3, -1, -1)  # [B, 3, H, W]; grey repeated
        (pool3,) = model(x)  # [B, 2048, 1, 1]
        features.append(pool3.flatten(1).double().cpu().numpy())
        bar.update(len(batch))
    bar.close()
    return np.concatenate(features)


def fid_from_features(features: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """FID of features [N >= 2, 2048] against reference statistics mu_ref [2048], sigma_ref [2048, 2048]."""
    mu, sigma = feature_statistics(features)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
