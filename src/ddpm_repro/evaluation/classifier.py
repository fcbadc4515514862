"""The offline feature extractor: a small CNN classifier trained on the dataset itself.

Sample quality needs features; Inception's weights cannot be downloaded offline, so the
`reference` stage trains this classifier on the training split. Its penultimate layer
(`features`, [N, feature_dim]) gives a Frechet distance that always works; its class
probabilities give an Inception-Score analogue and per-class accuracy of conditional
samples. Numbers in these features are comparable only within one dataset and classifier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..data.arrays import ImageArrays
from ..errors import UserError
from ..progress import Progress


@dataclass(frozen=True)
class ClassifierConfig:
    """The shape of a `SmallClassifier`; saved with its weights (see `classifier_state`)."""

    in_channels: int = 1
    num_classes: int = 10
    width: int = 32
    feature_dim: int = 64


class SmallClassifier(nn.Module):
    """conv-ReLU x3 (two stride-2) -> global average pool -> [N, feature_dim] -> linear."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.body = nn.Sequential(
            nn.Conv2d(c.in_channels, c.width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c.width, 2 * c.width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c.width, c.feature_dim, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] in [-1, 1] -> penultimate features [N, feature_dim]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] in [-1, 1] -> class logits [N, num_classes]."""
        return self.head(self.features(x))


def train_classifier(
    train: ImageArrays,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    feature_dim: int = 64,
    progress: bool = False,
) -> SmallClassifier:
    """Adam on cross-entropy over the labelled training split, seeded."""
    num_classes = train.num_classes
    if num_classes is None:
        raise UserError("the reference classifier needs a labelled training split")
    torch.manual_seed(seed)
    model = SmallClassifier(ClassifierConfig(train.images.shape[-1], num_classes, feature_dim=feature_dim))
    x, y = train.to_tensor(), torch.from_numpy(train.labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    bar = Progress("classifier", epochs, "epoch", enabled=progress)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        bar.update(1, loss=float(loss.detach()))
    bar.close()
    return model.eval()


@torch.no_grad()
def predict(
    model: SmallClassifier, images: np.ndarray, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, H, W, C] -> (features [N, D], class probabilities [N, K]), float64."""
    x = ImageArrays(images, np.full(len(images), -1)).to_tensor()
    feats, probs = [], []
    for start in range(0, len(x), batch_size):
        f = model.features(x[start : start + batch_size])
        feats.append(f.double().numpy())
        probs.append(torch.softmax(model.head(f), dim=1).double().numpy())
    return np.concatenate(feats), np.concatenate(probs)


def classifier_state(model: SmallClassifier) -> dict:
    """Weights and config as tensors and plain types (loads with weights_only=True)."""
    return {"config": asdict(model.config), "weights": model.state_dict()}


def classifier_from_state(state: dict) -> SmallClassifier:
    """Rebuild the classifier `classifier_state` saved, in eval mode."""
    model = SmallClassifier(ClassifierConfig(**state["config"]))
    model.load_state_dict(state["weights"])
    return model.eval()


def inception_score_analogue(probs: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) in the classifier's classes (Salimans et al. 2016's
    Inception Score with our classifier): 1 for uninformative predictions, at most K."""
    probs = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    marginal = probs.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(probs * (np.log(probs) - np.log(marginal)), axis=1))))
