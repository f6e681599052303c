"""Soft labels and attention-by-class against hand-made expectations."""
from __future__ import annotations

import numpy as np
import pytest

from sfrs_core.data.synthcity.labels import CLASS_ID, CLASSES
from sfrs_core.explain.attention import class_shares, pointing_hit, summarise
from sfrs_core.explain.soft_labels import entropy, image_region_boxes, softmax, top_mass


def test_soft_labels_sum_to_one_and_sharpen_as_the_temperature_falls():
    sims = np.random.default_rng(0).uniform(0.2, 0.9, size=(5, 10, 9))
    dists = [softmax(sims, t) for t in (0.07, 0.06, 0.05, 0.02)]
    for d in dists:
        np.testing.assert_allclose(d.reshape(5, -1).sum(1), 1.0)
    ent = np.stack([entropy(d) for d in dists])
    assert (np.diff(ent, axis=0) < 0).all()
    assert (np.diff(np.stack([top_mass(d) for d in dists]), axis=0) > 0).all()
    assert entropy(np.full((1, 90), 1 / 90))[0] == pytest.approx(np.log(90))


def test_class_shares_sum_to_one_and_a_map_on_a_sign_scores_100_percent():
    label = np.full((24, 32), CLASS_ID["facade"], np.uint8)
    label[:6] = CLASS_ID["sky"]
    label[10:14, 8:20] = CLASS_ID["sign"]
    label[16:, 24:] = CLASS_ID["tree"]
    noise = np.random.default_rng(1).random(label.shape)
    shares = class_shares(noise, label)
    assert sum(shares.values()) == pytest.approx(1.0) and list(shares) == list(CLASSES)
    on_sign = (label == CLASS_ID["sign"]).astype(float)
    assert class_shares(on_sign, label)["sign"] == pytest.approx(1.0)
    assert pointing_hit(on_sign, label) is True
    on_tree = (label == CLASS_ID["tree"]).astype(float)
    assert class_shares(on_tree, label)["tree"] == pytest.approx(1.0) and pointing_hit(on_tree, label) is False
    # the same map at half resolution is resized to the label map
    assert class_shares(on_sign[::2, ::2], label)["sign"] > 0.6


def test_pointing_game_tolerance_and_images_without_signs():
    label = np.zeros((20, 20), np.uint8)
    label[5:8, 5:8] = CLASS_ID["sign"]
    heat = np.zeros((20, 20))
    heat[5, 11] = 1.0  # 4 px right of the sign
    assert pointing_hit(heat, label) is False
    assert pointing_hit(heat, label, tolerance_px=4.0) is True
    assert pointing_hit(heat, np.zeros((20, 20), np.uint8)) is None
    s = summarise([class_shares(heat, label)] * 3, [True, False, None])
    assert s["pointing_rate"] == 0.5 and s["pointing_images"] == 2 and s["images"] == 3


def test_region_boxes_cover_the_image():
    boxes = image_region_boxes((240, 320), (15, 20))
    assert boxes[0] == (0, 0, 320, 240)  # global
    assert boxes[1] == (0, 0, 320, 112) and boxes[2] == (0, 112, 320, 240)  # top / bottom split at row 7 of 15
    assert boxes[5] == (0, 0, 160, 112)  # top-left quarter


def test_draw_regions_tints_in_proportion_to_the_weights():
    from sfrs_core.explain.soft_labels import draw_regions

    img = np.full((120, 160, 3), 128, np.uint8)
    w = np.zeros(9)
    w[5] = 1.0  # all weight on the top-left quarter
    out = draw_regions(img, (15, 20), weights=w)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out[30, 40], img[30, 40])  # inside the top-left quarter: tinted
    np.testing.assert_array_equal(out[90, 120], img[90, 120])  # inside the bottom-right: untouched
    assert not np.array_equal(draw_regions(img, (15, 20))[0, 80], img[0, 80])  # outlines drawn
