"""The batched RandAugment-style strong view (aeclass/data/randaugment.py)."""
import pytest
import torch

from aeclass.data.randaugment import COLOUR, OPERATIONS, _affine, _colour_op, cut_out, rand_augment


def images(n=32, seed=0):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_same_generator_state_same_views_and_values_stay_images():
    x = images()
    a = rand_augment(x, torch.Generator().manual_seed(5))
    b = rand_augment(x, torch.Generator().manual_seed(5))
    c = rand_augment(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and 0 <= float(a.min()) and float(a.max()) <= 1
    assert not torch.equal(a, x)


@pytest.mark.parametrize("name", ["brightness", "colour", "contrast", "sharpness"])
def test_enhancements_at_the_middle_magnitude_are_the_identity(name):
    x = images(4)
    half = torch.full((4, 1, 1, 1), 0.5)  # factor 1 + 0.95 * (2 * 0.5 - 1) = 1
    assert torch.allclose(_colour_op(name, x, half), x, atol=1e-6)
    assert not torch.allclose(_colour_op(name, x, torch.zeros(4, 1, 1, 1)), x, atol=1e-3)


def test_the_pixel_operations_do_what_their_names_say():
    x = images(4)
    m = torch.zeros(4, 1, 1, 1)
    ac = _colour_op("autocontrast", x, m)
    assert torch.allclose(ac.amin((2, 3)), torch.zeros(4, 3)) and torch.allclose(ac.amax((2, 3)), torch.ones(4, 3))
    eq = _colour_op("equalize", x, m)  # every channel's values become evenly spread ranks
    assert torch.allclose(eq.flatten(2).sort(-1).values[0, 0], torch.linspace(0, 1, 256), atol=1e-6)
    assert torch.equal(_colour_op("solarize", x, m), 1 - x)  # threshold 0: every value inverted
    assert torch.equal(_colour_op("solarize", x, torch.full_like(m, 1.01)), x)
    eight_bit = torch.randint(0, 256, x.shape).float() / 255
    assert torch.allclose(_colour_op("posterize", eight_bit, torch.ones_like(m)), eight_bit)  # 8 bits kept
    four = _colour_op("posterize", eight_bit, m) * 255  # 4 bits: multiples of 16
    assert torch.allclose(four % 16, torch.zeros_like(four), atol=1e-3)


def test_images_that_drew_no_geometric_operation_keep_the_identity_map():
    n = 6
    chosen = {name: torch.zeros(n, dtype=torch.bool) for name in OPERATIONS}
    mags = {name: torch.rand(n) for name in OPERATIONS}
    chosen["translate_x"][0] = True
    theta = _affine(chosen, mags, n, torch.Generator().manual_seed(0))
    identity = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    assert all(torch.allclose(theta[i], identity) for i in range(1, n))
    assert abs(float(theta[0, 0, 2])) == pytest.approx(0.6 * float(mags["translate_x"][0]), rel=1e-5)


def test_cut_out_zeroes_one_square_of_at_most_half_the_side_per_image():
    x = torch.ones(200, 3, 16, 16)
    y = cut_out(x, torch.Generator().manual_seed(1))
    zeros = (y[:, 0] == 0).flatten(1).sum(1)
    assert int(zeros.max()) <= 64 and int(zeros.float().mean()) > 4
    assert torch.equal(y[:, 0] == 0, y[:, 2] == 0)  # a pixel is lost in all its channels


def test_nearly_every_image_is_changed_without_the_cut_out():
    """Two operations of 14 per image: only one image in 196 draws the identity twice (some others, e.g. a
    solarize at threshold 1, change little)."""
    x = images(400)
    y = rand_augment(x, torch.Generator().manual_seed(0), cutout=False)
    changed = (y - x).abs().flatten(1).amax(1) > 1e-3
    assert float(changed.float().mean()) > 0.9
    assert len(COLOUR) + 5 == len(OPERATIONS)
