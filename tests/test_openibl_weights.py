"""OpenIBL weights in and out: malformed files are refused in one line, and a trained VGG16
model exported with ``export-weights`` has exactly OpenIBL's keys and shapes and loads back
with the same descriptors."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sfrs_core import cli
from sfrs_core.errors import CheckpointError
from sfrs_core.models.model import ModelConfig, build_model
from sfrs_core.models.openibl import export_openibl, load_openibl, to_openibl_state_dict
from sfrs_core.training.checkpoint import model_payload, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
K, PCA_DIM, D = 8, 16, 512

# OpenIBL's vgg16_netvlad, written out from its module structure (ibl/models/vgg.py: torchvision's
# VGG16 ``features`` without the last ReLU and max-pool, as ``base_model.base``; netvlad.py:
# ``net_vlad.conv`` a bias-free 1x1 Conv2d(D, K), ``net_vlad.centroids`` K x D; EmbedNetPCA:
# ``pca_layer`` a 1x1 Conv2d(K*D, dim) with bias). (index in features, in, out) of each conv:
VGG16_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
               (26, 512, 512), (28, 512, 512)]


def openibl_keys(k: int, pca_dim: int | None) -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {}
    for i, cin, cout in VGG16_CONVS:
        keys[f"base_model.base.{i}.weight"] = (cout, cin, 3, 3)
        keys[f"base_model.base.{i}.bias"] = (cout,)
    keys["net_vlad.conv.weight"] = (k, D, 1, 1)
    keys["net_vlad.centroids"] = (k, D)
    if pca_dim is not None:
        keys["pca_layer.weight"] = (pca_dim, k * D, 1, 1)
        keys["pca_layer.bias"] = (pca_dim,)
    return keys


class _OpenIBLStandIn(nn.Module):
    """Modules named and shaped as OpenIBL's embednetpca/embednet (structure only, no forward)."""

    def __init__(self, k: int, pca_dim: int | None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.base_model = nn.Module()
        self.base_model.base = nn.Sequential(*layers[:-2])
        self.net_vlad = nn.Module()
        self.net_vlad.conv = nn.Conv2d(D, k, 1, bias=False)
        self.net_vlad.centroids = nn.Parameter(torch.zeros(k, D))
        if pca_dim is not None:
            self.pca_layer = nn.Conv2d(k * D, pca_dim, 1)


def assert_one_line(err: pytest.ExceptionInfo, path: Path, *needles: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 320, msg
    assert "weights_only=False" not in msg and "weights_only" not in msg, msg
    assert str(path) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small random VGG16 model with fitted PCA and OpenIBL's input normalisation, saved as our checkpoint."""
    torch.manual_seed(0)
    config = ModelConfig(trunk="vgg16", num_clusters=K, pca_dim=PCA_DIM, pretrained=False, input_norm="matconvnet")
    model = build_model(config).eval()
    model.pca.fit(torch.nn.functional.normalize(torch.randn(48, model.vlad_dim), dim=1))
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "gen3.pt", model_payload(model, generation=3))
    return model, path


@pytest.fixture(scope="module")
def openibl_state(trained):
    return {k: v.clone() for k, v in to_openibl_state_dict(trained[0]).items()}


# --------------------------------------------------------------------------- round trip


def test_export_has_openibl_keys_and_loads_back_with_same_descriptors(trained, tmp_path):
    model, ckpt = trained
    done = export_openibl(ckpt, tmp_path / "vgg16_netvlad.pth")
    assert done.path == tmp_path / "vgg16_netvlad.pth" and done.model == "embednetpca"
    assert (done.num_clusters, done.pca_dim, done.notes) == (K, PCA_DIM, [])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    exported = torch.load(done.path, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in exported.items()} == openibl_keys(K, PCA_DIM)
    assert all(v.dtype == torch.float32 for v in exported.values())
    _OpenIBLStandIn(K, PCA_DIM).load_state_dict(exported)  # strict: OpenIBL's module tree takes it

    loaded = load_openibl(done.path)
    assert loaded.config.num_clusters == K and loaded.config.pca_dim == PCA_DIM and loaded.pca.is_fitted
    assert loaded.normalization.name == "matconvnet"  # what OpenIBL feeds its VGG16
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    assert want.shape == (3, PCA_DIM)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_export_without_pca_is_openibls_embednet_layout(tmp_path):
    torch.manual_seed(1)
    model = build_model(ModelConfig(trunk="vgg16", num_clusters=4, pca_dim=None, pretrained=False,
                                    input_norm="imagenet")).eval()
    ckpt = save_checkpoint(tmp_path / "nopca.pt", model_payload(model))
    with pytest.raises(CheckpointError) as err:  # embednetpca needs a PCA layer
        export_openibl(ckpt, tmp_path / "out.pth")
    assert_one_line(err, ckpt, "no PCA layer", "--no-pca")
    done = export_openibl(ckpt, tmp_path / "out.pth", pca=False)
    assert done.model == "embednet" and done.pca_dim is None
    # the file cannot carry the preprocessing: the export says what OpenIBL must feed instead
    assert len(done.notes) == 1 and "imagenet" in done.notes[0] and "std=[0.229, 0.224, 0.225]" in done.notes[0]
    exported = torch.load(done.path, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in exported.items()} == openibl_keys(4, None)
    _OpenIBLStandIn(4, None).load_state_dict(exported)
    loaded = load_openibl(done.path)
    assert loaded.pca is None
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "module"])
def test_accepted_layouts(openibl_state, tmp_path, wrap):
    state = dict(openibl_state)
    if wrap == "module":  # OpenIBL's DDP training checkpoint: prefix and wrapper
        data = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 4, "best_recall5": 0.9}
    elif wrap == "state_dict":
        data = {"state_dict": state, "epoch": 4}
    else:
        data = state
    torch.save(data, tmp_path / "checkpoint3_4.pth.tar")
    model = load_openibl(tmp_path / "checkpoint3_4.pth.tar")
    assert model.config.num_clusters == K and model.pca.is_fitted


# --------------------------------------------------------------------------- refusals


def _broken(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    return path


def test_missing_centroids(openibl_state, tmp_path):
    state = {k: v for k, v in openibl_state.items() if k != "net_vlad.centroids"}
    path = _broken(tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        load_openibl(path)
    assert_one_line(err, path, "missing key", "'net_vlad.centroids'")


def test_missing_conv_layer(openibl_state, tmp_path):
    state = {k: v for k, v in openibl_state.items() if not k.startswith("base_model.base.26.")}
    path = _broken(tmp_path, {"state_dict": state})
    with pytest.raises(CheckpointError) as err:
        load_openibl(path)
    assert_one_line(err, path, "missing key", "base_model.base.26.")


def test_wrong_conv_shape(openibl_state, tmp_path):
    state = dict(openibl_state, **{"base_model.base.2.weight": torch.zeros(64, 32, 3, 3)})
    path = _broken(tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        load_openibl(path)
    assert_one_line(err, path, "'base_model.base.2.weight'", "expected [64, 64, 3, 3]", "got [64, 32, 3, 3]")


def test_wrong_centroid_dim(openibl_state, tmp_path):
    state = dict(openibl_state, **{"net_vlad.centroids": torch.zeros(K, 256)})
    path = _broken(tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        load_openibl(path)
    assert_one_line(err, path, "'net_vlad.centroids'", f"expected [{K}, 512]", f"got [{K}, 256]")


@pytest.mark.parametrize("extra", ["net_vlad.bias", "base_model.base.30.weight", "base_model.fc.weight"])
def test_unknown_key(openibl_state, tmp_path, extra):
    state = {**openibl_state, extra: torch.zeros(3)}
    path = _broken(tmp_path, {"state_dict": {"module." + k: v for k, v in state.items()}})
    with pytest.raises(CheckpointError) as err:
        load_openibl(path)
    assert_one_line(err, path, "unknown key", repr(extra))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        load_openibl(path)
    assert_one_line(err, path, "empty")


def test_truncated_file(openibl_state, tmp_path):
    path = _broken(tmp_path, {"net_vlad.centroids": openibl_state["net_vlad.centroids"]})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError) as err:
        load_openibl(path)
    assert_one_line(err, path, "corrupt or truncated")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_pickle_that_would_run_code(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"hook": _RunsCode(marker), "state_dict": {"net_vlad.centroids": torch.zeros(2, 2)}}
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError) as err:
        load_openibl(path)
    assert_one_line(err, path, "refused", "system")
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:  # export reads through load_model: same short line
        export_openibl(path, tmp_path / "out.pth")
    assert_one_line(err, path, "refused")
    assert not marker.exists() and not (tmp_path / "out.pth").exists()


def test_export_refuses_non_vgg16_and_unfitted_pca(tmp_path):
    mob = build_model(ModelConfig(trunk="mobilenet_v2", num_clusters=4, pca_dim=8, pretrained=False))
    ckpt = save_checkpoint(tmp_path / "mobilenet.pt", model_payload(mob))
    with pytest.raises(CheckpointError) as err:
        export_openibl(ckpt, tmp_path / "out.pth")
    assert_one_line(err, ckpt, "VGG16", "mobilenet_v2")

    vgg = build_model(ModelConfig(trunk="vgg16", num_clusters=4, pca_dim=8, pretrained=False))
    ckpt = save_checkpoint(tmp_path / "unfitted.pt", model_payload(vgg))
    with pytest.raises(CheckpointError) as err:
        export_openibl(ckpt, tmp_path / "out.pth")
    assert_one_line(err, ckpt, "not fitted", "--no-pca")
    assert not (tmp_path / "out.pth").exists()
    # via the CLI: exit status 2, one line on stderr
    assert cli.main(["export-weights", str(ckpt), "--format", "openibl", "--out", str(tmp_path / "out.pth")]) == 2


def test_export_refuses_to_overwrite_its_input(trained, tmp_path):
    _, ckpt = trained
    with pytest.raises(ValueError, match="checkpoint itself"):
        export_openibl(ckpt, ckpt)


def test_cli_export_weights(trained, tmp_path):
    _, ckpt = trained
    out = tmp_path / "weights" / "vgg16_netvlad.pth"
    proc = subprocess.run(
        [sys.executable, "-m", "sfrs_core", "export-weights", str(ckpt), "--format", "openibl", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "embednetpca" in proc.stdout and str(out) in proc.stdout and "note:" not in proc.stdout
    exported = torch.load(out, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in exported.items()} == openibl_keys(K, PCA_DIM)
