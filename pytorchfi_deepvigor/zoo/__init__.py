"""The model zoo: CIFAR-form models, the embedded digits, training with a cache, user data.

Everything here is optional for the analysis (which works on any ``nn.Module``); the CLI,
the examples and the validation use it to get real trained models on real data offline.

Example:
    >>> from pytorchfi_deepvigor import zoo
    >>> model = zoo.build_model("vgg11", width=1 / 16, in_channels=1)
    >>> batch = zoo.analysis_batch(n=8)
    >>> model.eval()(batch.images).shape
    torch.Size([8, 10])
"""

from pytorchfi_deepvigor.zoo.cache import CACHE_ENV_VAR, resolve_cache_dir
from pytorchfi_deepvigor.zoo.checkpoint import load_checkpoint
from pytorchfi_deepvigor.zoo.datasets import (
    ImageSet,
    load_cifar10,
    load_cifar100,
    load_image_folder,
    load_mnist,
)
from pytorchfi_deepvigor.zoo.digits import DigitsData, analysis_batch, load_digits, predict
from pytorchfi_deepvigor.zoo.int8 import quantize_int8
from pytorchfi_deepvigor.zoo.models import (
    DEFAULT_WIDTHS,
    INPUT_SIZE_MULTIPLE,
    VALIDATION_WIDTHS,
    build_model,
    count_parameters,
    list_models,
)
from pytorchfi_deepvigor.zoo.train import (
    DEFAULT_EPOCHS,
    TrainingConfig,
    TrainingRecord,
    get_trained_model,
    train_model,
)

__all__ = [
    "quantize_int8",
    "CACHE_ENV_VAR",
    "DEFAULT_EPOCHS",
    "INPUT_SIZE_MULTIPLE",
    "DEFAULT_WIDTHS",
    "VALIDATION_WIDTHS",
    "DigitsData",
    "ImageSet",
    "TrainingConfig",
    "TrainingRecord",
    "analysis_batch",
    "build_model",
    "count_parameters",
    "get_trained_model",
    "list_models",
    "load_checkpoint",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "predict",
    "resolve_cache_dir",
    "train_model",
]
