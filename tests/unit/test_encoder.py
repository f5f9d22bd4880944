"""The feature extractor: real VGG16/MobileNetV2 architectures, weight loading and checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from app.core.config import Settings
from app.core.errors import ConfigurationError, WeightsNotFound
from app.ml.encoder import Encoder, resolve_weights
from app.ml.imageio import decode_image
from app.ml.trunks import pool_features
from tests.imagegen import distinct_image, jpeg_bytes


def batch(seeds: list[int]) -> np.ndarray:
    return np.stack(
        [
            decode_image(jpeg_bytes(distinct_image(s)), size=224, max_pixels=10**8).pixels
            for s in seeds
        ]
    )


@pytest.fixture(scope="module")
def vgg_random() -> Encoder:
    return Encoder(Settings(weights="random", device="cpu", torch_threads=2))


def test_vgg16_vectors_are_512d_unit_length_and_batch_invariant(vgg_random: Encoder) -> None:
    pixels = batch([1, 2, 3])
    vectors = vgg_random.embed(pixels)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([vgg_random.embed(pixels[i : i + 1]) for i in range(3)])
    assert np.allclose(vectors, one_by_one, atol=1e-4)
    assert vgg_random.info.random_weights


def test_random_weights_are_identical_in_every_process(vgg_random: Encoder) -> None:
    again = Encoder(Settings(weights="random", device="cpu"))
    pixels = batch([4])
    assert np.allclose(vgg_random.embed(pixels), again.embed(pixels), atol=1e-6)
    assert again.info.weights_id == vgg_random.info.weights_id


def test_missing_imagenet_weights_refuse_with_where_to_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound) as info:
        resolve_weights(Settings(weights="imagenet"))
    message = info.value.message
    assert "vgg16-397923af.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "PICSEARCH_WEIGHTS=random" in message


def test_weights_file_loads_and_is_identified_by_sha256(tmp_path: Path) -> None:
    """The real-weights path with a small saved state dict (MobileNetV2, randomly initialised)."""
    net = torchvision.models.mobilenet_v2(weights=None)
    torch.nn.init.constant_(net.features[0][0].weight, 0.01)
    path = tmp_path / "tiny.pth"
    torch.save(net.state_dict(), path)
    enc = Encoder(Settings(model="mobilenet_v2", weights=str(path), device="cpu"))
    assert enc.info.dim == 1280 and enc.info.weights_id.startswith("sha256:")
    assert not enc.info.random_weights
    loaded = enc.trunk[0][0].weight  # type: ignore[index]
    assert torch.allclose(loaded, torch.full_like(loaded, 0.01))
    assert enc.embed(batch([5])).shape == (1, 1280)


def test_official_name_with_wrong_hash_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    target.parent.mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), target)
    with pytest.raises(ConfigurationError, match="corrupt"):
        resolve_weights(Settings(model="mobilenet_v2", weights="imagenet"))


def test_weights_of_another_architecture_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ConfigurationError, match="do not fit"):
        Encoder(Settings(model="mobilenet_v2", weights=str(path)))


def test_pooling_variants() -> None:
    fmap = torch.arange(8, dtype=torch.float32).view(1, 2, 2, 2)
    assert pool_features(fmap, "mac").tolist() == [[3.0, 7.0]]
    assert pool_features(fmap, "spoc").tolist() == [[1.5, 5.5]]
    gem = pool_features(fmap, "gem")[0]
    assert 1.5 < gem[0] < 3.0 and 5.5 < gem[1] < 7.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(vgg_random: Encoder) -> None:
    gpu = Encoder(Settings(weights="random", device="cuda", precision="fp32"))
    pixels = batch([6, 7])
    cos = (gpu.embed(pixels) * vgg_random.embed(pixels)).sum(1)
    assert cos.min() > 0.999
