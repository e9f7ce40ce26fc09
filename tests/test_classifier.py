"""Chapter 02's digit classifier (genai_course.models.classifier)."""

import pytest
import torch

from genai_course.models import ClassifierConfig, DigitClassifier


def test_classifier_shapes_features_and_bad_input():
    clf = DigitClassifier(ClassifierConfig(hidden=64))
    x = torch.rand(5, 1, 28, 28)
    assert clf(x).shape == (5, 10)
    assert clf.features(x).shape == (5, 64)
    assert clf.predict(x).dtype == torch.int64
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        clf(torch.rand(5, 28, 28))
    with pytest.raises(ValueError, match="float pixels"):
        clf(torch.zeros(5, 1, 28, 28, dtype=torch.uint8))
