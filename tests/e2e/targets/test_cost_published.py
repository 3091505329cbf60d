"""The cost model's FLOP count of a real ResNet-50 against the published figure."""

from __future__ import annotations

import pytest

from tests.unit.targets.test_cost_published import RESNET50_FLOPS


@pytest.mark.e2e
def test_resnet50_flops_are_the_tools_count() -> None:
    """RESNET50_FLOPS (the unit tier's figure) is what the tool counts for torchvision's ResNet-50 (slow: traces the model)."""
    import torchvision

    from isplit_export.ranking.graph import trace

    assert (
        trace(torchvision.models.resnet50(weights=None).eval(), (3, 224, 224)).total_flops == RESNET50_FLOPS
    )
