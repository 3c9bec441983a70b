"""SegNet and SegNet-Basic specifics: exact parameter counts, the classifier, Bayesian dropout,
the registry. The generic checks every model passes are in test_all_models.py."""

from __future__ import annotations

import pytest
import torch

import segnet
from segnet import SegNetError

# Exact counts for K=11 (paper / authors' Caffe models; see each builder's docstring).
PARAMETERS = {
    "segnet": 29_449_355,
    "bayesian_segnet": 29_449_355,
    "segnet_basic": 1_416_587,
    "bayesian_segnet_basic": 1_416_587,
}


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_count(name: str) -> None:
    model = segnet.build_model(name, num_classes=11)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]


def test_classifier_has_no_activation() -> None:
    model = segnet.build_model("segnet", num_classes=11)
    assert isinstance(model.classifier, torch.nn.Conv2d)
    assert model.classifier.kernel_size == (3, 3)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (model.eval()(x) < 0).any()  # raw scores, not ReLU'd


def test_bayesian_models_place_dropout_as_the_paper() -> None:
    drops = lambda m: sum(isinstance(x, torch.nn.Dropout) for x in m.modules())  # noqa: E731
    assert drops(segnet.build_model("bayesian_segnet", num_classes=3)) == 6
    assert drops(segnet.build_model("bayesian_segnet_basic", num_classes=3)) == 4
    assert drops(segnet.build_model("segnet", num_classes=3)) == 0


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(SegNetError, match="segnet_basic"):
        segnet.build_model("segnett", num_classes=3)


def test_list_models_pattern() -> None:
    assert "segnet_basic" in segnet.list_models("segnet*")
    assert all(n.startswith("bayesian") for n in segnet.list_models("bayesian*"))
