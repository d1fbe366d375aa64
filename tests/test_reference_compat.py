import pytest
import torch

from nets.yolo import YoloBody
from tests.conftest import ANCHORS_MASK
from tests.reference_model import ReferenceYoloBody, randomize


@pytest.mark.parametrize("phi", range(5))
def test_reference_state_dict_loads_strict_and_gives_same_outputs(phi):
    reference = randomize(ReferenceYoloBody(ANCHORS_MASK, 20, phi=phi)).eval()
    ours = YoloBody(ANCHORS_MASK, 20, phi=phi).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        for a, b in zip(reference(x), ours(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("phi", range(5))
def test_state_dict_names_are_the_reference_names(phi):
    reference = ReferenceYoloBody(ANCHORS_MASK, 20, phi=phi)
    ours = YoloBody(ANCHORS_MASK, 20, phi=phi)
    assert list(ours.state_dict()) == list(reference.state_dict())


def test_reference_import_path_still_works():
    from nets.yolo import YoloBody as ReferenceName
    out0, out1 = ReferenceName(ANCHORS_MASK, 20, phi=2).eval()(torch.randn(1, 3, 64, 64))
    assert out0.shape[1] == 75 and out0.shape[2] == 2 and out1.shape[2] == 4
