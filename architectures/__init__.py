"""Model zoo of cnn-harness: every model is built by name through one registry.

Importing this package registers every model (timm style)::

    from architectures import create_model, list_models, model_info
    model = create_model("resnet20", num_classes=10, in_chans=1)
    list_models("resnet*")            # glob filter
    model_info("basic_cnn").params    # metadata: family, source, sizes, params, MFLOPs, head, stages

Model files: :mod:`.airbench` (the CIFAR-10 speed record's network), :mod:`.basic` and :mod:`.mlp` (the reports' plain nets and LeNet), :mod:`.all_cnn`,
:mod:`.attention`, :mod:`.resnet_cifar`, :mod:`.mobilenet_cifar`, :mod:`.efficientnet_cifar`,
:mod:`.vgg_cifar` and :mod:`.torchvision_models` (torchvision's ImageNet designs).
"""

from architectures import (  # noqa: F401  (imported for their @register_model side effect)
    airbench,
    all_cnn,
    attention,
    basic,
    efficientnet_cifar,
    mlp,
    mobilenet_cifar,
    resnet_cifar,
    torchvision_models,
    vgg_cifar,
)
from architectures.flops import count_mflops
from architectures.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "count_mflops", "create_model", "list_models", "model_info", "register_model"]
