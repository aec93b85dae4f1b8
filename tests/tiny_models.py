"""Tiny VGG-, ResNet- and MobileNetV2-shaped models built in code, shared by the tests."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "tiny_vgg",
    "tiny_resnet",
    "tiny_mobilenet",
    "TINY_MODELS",
    "seeded_images",
    "train_on_digits",
]


def tiny_vgg(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 8),
        nn.ReLU(),
        nn.Linear(8, num_classes),
    ).eval()


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = _Block(4, 4, 1)
        self.layer2 = _Block(4, 8, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class _Inverted(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 2) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class TinyMobileNet(nn.Module):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU6()
        )
        self.blocks = nn.Sequential(_Inverted(4, 4, 1), _Inverted(4, 6, 2))
        self.classifier = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.classifier(x.mean(dim=(2, 3)))


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics so eval mode differs from train mode."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def tiny_resnet(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(TinyResNet(num_classes)).eval()


def tiny_mobilenet(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(TinyMobileNet(num_classes)).eval()


TINY_MODELS = {"vgg": tiny_vgg, "resnet": tiny_resnet, "mobilenet": tiny_mobilenet}


def seeded_images(n: int = 8, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def train_on_digits(net: nn.Module, epochs: int, n_test: int) -> tuple[nn.Module, torch.Tensor]:
    """``net`` trained (Adam; the caller seeds torch) on the first 1,500 of scikit-learn's 8x8 digits, in eval
    mode, and the first ``n_test`` of the others; it must reach 80% on them (a trained CNN's
    faults behave like a real one's)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(1500).split(64):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x[1500:]).argmax(1) == y[1500:]).float().mean()
    assert accuracy > 0.8, accuracy
    return net, x[1500 : 1500 + n_test]
