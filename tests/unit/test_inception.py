"""FID's Inception wrapper, offline: the real pytorch-fid architecture with random weights placed in a
temporary torch.hub cache, and every way the real weights can be unavailable (missing, no network, corrupt).
"""

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import pytorch_fid.inception
import torch
import torch.hub

from ddpm_repro.config import ReferenceConfig
from ddpm_repro.evaluation.frechet import feature_statistics
from ddpm_repro.evaluation.inception import (
    InceptionUnavailable,
    fid_from_features,
    inception_features,
    inception_weights_path,
    load_inception,
)

URL = pytorch_fid.inception.FID_WEIGHTS_URL

TINY = ReferenceConfig(epochs=1, batch_size=4, lr=1e-3, seed=0, feature_dim=8)  # a classifier in seconds


def _forbid_network(mp: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        pytest.fail(f"network touched: {args}")

    mp.setattr(torch.hub, "download_url_to_file", fail)
    mp.setattr(torch.hub, "urlopen", fail)


@pytest.fixture(scope="module")
def weights_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds a random-weights state dict of pytorch-fid's FID Inception."""
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        built = []

        def build_and_record(*args, **kwargs):
            built.append(original_build(*args, **kwargs))
            return built[-1]

        original_build = pytorch_fid.inception._inception_v3
        mp.setattr(pytorch_fid.inception, "_inception_v3", build_and_record)
        # fid_inception_v3 swaps the FID blocks into the model it built, then loads: give it its own weights.
        mp.setattr(pytorch_fid.inception, "load_state_dict_from_url", lambda *a, **k: built[-1].state_dict())
        torch.manual_seed(0)
        net = pytorch_fid.inception.fid_inception_v3()
        # He init keeps the pool3 features O(1); PyTorch's default init shrinks them to ~1e-8.
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        path = inception_weights_path()
        path.parent.mkdir(parents=True)
        torch.save(net.state_dict(), path)
    return home


@pytest.fixture(scope="module")
def inception(weights_home) -> torch.nn.Module:
    """Loaded through the real cache path, with the network forbidden."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(weights_home))
        _forbid_network(mp)
        return load_inception()


def _images(seed: int, n: int, high: int = 256, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size=(n, 8, 8, channels), dtype=np.uint8)


@pytest.fixture(scope="module")
def two_sets(inception) -> tuple[np.ndarray, np.ndarray]:
    """Features [4, 2048] of bright noise images and of darker ones, in batches of 3 (3 + 1)."""
    return (
        inception_features(_images(0, 4), inception, batch_size=3),
        inception_features(_images(1, 4, high=100), inception, batch_size=3),
    )


def test_weights_path_is_torch_hub_cache_under_torch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert (
        inception_weights_path() == tmp_path / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    )


def test_cached_weights_load_without_network(inception, weights_home):
    saved = torch.load(
        weights_home / "hub" / "checkpoints" / inception_weights_path().name, weights_only=True
    )
    first_conv = inception.blocks[0][0].conv.weight
    assert torch.equal(first_conv, saved["Conv2d_1a_3x3.conv.weight"])
    assert not inception.training
    assert not any(p.requires_grad for p in inception.parameters())


def test_missing_weights_raise_one_line_without_touching_the_network(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _forbid_network(monkeypatch)
    with pytest.raises(InceptionUnavailable) as info:
        load_inception(allow_download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(inception_weights_path()) in message and URL in message
    assert message.startswith("FID not computed")


def test_failed_download_raises_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # the real download_url_to_file runs up to here
    with pytest.raises(InceptionUnavailable) as info:
        load_inception(allow_download=True)
    message = str(info.value)
    assert "\n" not in message
    assert str(inception_weights_path()) in message and URL in message and "URLError" in message
    assert not inception_weights_path().exists()


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "wrong keys"])
def test_corrupt_weights_file_raises_naming_the_file(monkeypatch, tmp_path, weights_home, corruption):
    good = weights_home / "hub" / "checkpoints" / inception_weights_path().name
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _forbid_network(monkeypatch)
    path = inception_weights_path()
    path.parent.mkdir(parents=True)
    if corruption == "garbage":
        path.write_bytes(b"not a checkpoint\n" * 100)
    elif corruption == "truncated":
        with good.open("rb") as f:
            path.write_bytes(f.read(1 << 20))
    else:  # a valid file whose keys do not fit: load_state_dict's error spans several lines
        torch.save({"fc.weight": torch.zeros(3)}, path)
    with pytest.raises(InceptionUnavailable) as info:
        load_inception()
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "unreadable" in message


def test_features_are_float64_pool3_per_image(two_sets):
    bright, dark = two_sets
    assert bright.dtype == np.float64 and bright.shape == (4, 2048)
    assert np.all(np.isfinite(bright)) and not np.allclose(bright, dark)


def test_greyscale_is_repeated_to_rgb(inception):
    grey = _images(2, 3, channels=1)
    from_grey = inception_features(grey, inception, batch_size=2)
    from_rgb = inception_features(np.repeat(grey, 3, axis=-1), inception, batch_size=3)
    assert from_grey.shape == (3, 2048)
    np.testing.assert_allclose(from_grey, from_rgb, rtol=1e-4, atol=1e-6 * np.abs(from_rgb).max())


def test_pixels_reach_the_network_in_0_1_as_three_channels():
    # A stand-in for InceptionV3 (which returns a list of [B, C, 1, 1] maps): the min and max of each image.
    def extremes(x: torch.Tensor) -> list[torch.Tensor]:
        assert x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32
        return [torch.stack([x.amin((1, 2, 3)), x.amax((1, 2, 3))], 1)[..., None, None]]

    images = np.zeros((5, 8, 8, 1), np.uint8)
    images[:, 0, 0] = 255
    features = inception_features(images, extremes, batch_size=2, progress=True)
    np.testing.assert_array_equal(features, np.tile([0.0, 1.0], (5, 1)))


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 8, 8, 3), np.float32),  # not uint8
        np.zeros((2, 8, 8), np.uint8),  # no channel axis
        np.zeros((2, 8, 8, 4), np.uint8),  # RGBA
        np.zeros((0, 8, 8, 3), np.uint8),  # empty
    ],
)
def test_bad_images_raise_naming_the_shape(images):
    with pytest.raises(ValueError, match=str(images.shape).replace("(", r"\(").replace(")", r"\)")):
        inception_features(images, torch.nn.Identity())


def test_fid_of_a_set_against_itself_is_zero_and_against_another_positive(two_sets):
    # fid_from_features works in any dimension; 256 of the 2048 features keep the eigendecompositions
    # cheap (a 2048 x 2048 `eigh` takes tens of seconds on two busy CPU cores).
    bright, dark = (features[:, :256] for features in two_sets)
    mu, sigma = feature_statistics(bright)
    scale = np.trace(sigma) + mu @ mu
    assert fid_from_features(bright, mu, sigma) == pytest.approx(0.0, abs=1e-6 * scale)
    mu_dark, sigma_dark = feature_statistics(dark)
    other = fid_from_features(bright, mu_dark, sigma_dark)
    assert np.isfinite(other) and other > 1e-3 * scale


def _tiny_split(seed: int, n: int):
    from ddpm_repro.data.arrays import ImageArrays

    rng = np.random.default_rng(seed)
    return ImageArrays(rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), np.arange(n) % 3)


def test_the_reference_stage_and_evaluate_compute_fid_with_cached_weights(
    weights_home, tmp_path, monkeypatch
):
    from ddpm_repro.evaluation.reference import INCEPTION_STATS_FILE, Reference, build_reference

    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    _forbid_network(monkeypatch)
    train, test = _tiny_split(0, 6), _tiny_split(1, 4)
    metrics = build_reference(train, test, tmp_path, TINY)
    assert (
        np.isfinite(metrics["inception"]["fid_test_vs_train"])
        and metrics["inception"]["fid_test_vs_train"] > 0
    )
    assert (tmp_path / INCEPTION_STATS_FILE).is_file()
    fid = Reference(tmp_path, bootstrap_rounds=5, kid_subsets=2).inception_fid(_tiny_split(2, 4))
    assert np.isfinite(fid["fid_inception"]) and fid["fid_inception"] > 0
    assert fid["fid_inception_low"] <= fid["fid_inception_high"] and fid["fid_inception_se"] >= 0
    assert np.isfinite(fid["kid_inception"]) and fid["kid_inception_subsets"] == 2  # 4 samples: 2 subsets


def test_without_weights_fid_is_not_computed_and_says_why(tmp_path, monkeypatch, capsys):
    from ddpm_repro.evaluation.reference import INCEPTION_NOTE_FILE, Reference, build_reference

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    _forbid_network(monkeypatch)
    out = tmp_path / "reference"
    metrics = build_reference(_tiny_split(0, 6), _tiny_split(1, 4), out, TINY)
    assert metrics["inception"] is None and "Inception weights not found at" in metrics["inception_note"]
    assert capsys.readouterr().err.strip() == metrics["inception_note"]  # one line on stderr
    assert (out / INCEPTION_NOTE_FILE).read_text().strip() == metrics["inception_note"]
    fid = Reference(out).inception_fid(_tiny_split(2, 4))
    assert fid == {"fid_inception": None, "fid_note": metrics["inception_note"]}


def test_fid_from_feature_chunks_equals_fid_in_one_piece(weights_home, tmp_path, monkeypatch):
    # The evaluate stage computes the samples' Inception features in chunks that its workers
    # share (sharding.ChunkedJob); the FID must not depend on the split.
    from ddpm_repro.evaluation import reference as ref

    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    _forbid_network(monkeypatch)
    ref.build_reference(_tiny_split(0, 6), _tiny_split(1, 4), tmp_path, TINY)
    samples = _tiny_split(2, 7)
    whole = ref.Reference(tmp_path).inception_fid(samples)
    monkeypatch.setattr(ref, "FEATURE_CHUNK", 3)  # chunks of 3, 3 and 1 samples
    seen = []

    def run_chunks(n, compute):
        seen.append(n)
        return [compute(k) for k in reversed(range(n))][::-1]  # computed in another order

    chunked = ref.Reference(tmp_path).inception_fid(samples, run_chunks=run_chunks)
    assert seen == [3] and chunked["fid_inception"] == pytest.approx(whole["fid_inception"], rel=1e-9)


def test_fid_required_fails_up_front_and_never_is_never_computed(tmp_path, monkeypatch):
    from ddpm_repro.evaluation.inception import InceptionUnavailable
    from ddpm_repro.evaluation.reference import Reference, build_reference

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    _forbid_network(monkeypatch)
    with pytest.raises(InceptionUnavailable, match="Inception weights not found at"):
        build_reference(_tiny_split(0, 6), _tiny_split(1, 4), tmp_path / "r", TINY, fid="required")
    assert not (tmp_path / "r").exists()  # nothing was trained or written first
    out = tmp_path / "never"
    metrics = build_reference(_tiny_split(0, 6), _tiny_split(1, 4), out, TINY, fid="never")
    assert metrics["inception"] is None and metrics["inception_note"] == "evaluate.fid is never"
    assert Reference(out, fid="never").inception_fid(_tiny_split(2, 4)) == {
        "fid_inception": None,
        "fid_note": "evaluate.fid is never",
    }
    with pytest.raises(InceptionUnavailable, match="evaluate.fid is required"):
        Reference(out, fid="required")  # the missing statistics are named before any work


def test_features_report_progress_as_status_lines_off_a_terminal(inception, capsys, monkeypatch):
    monkeypatch.setenv("DDPM_REPRO_LOG_INTERVAL", "0")  # a line per batch
    inception_features(_images(3, 5), inception, batch_size=2, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [x.split(",")[0] for x in lines] == [f"inception: img {n}/5 ({100 * n // 5}%)" for n in (2, 4, 5)]
    inception_features(_images(3, 5), inception, batch_size=2)  # progress off: silent
    assert capsys.readouterr().err == ""
