"""torch.hub entry points (``hubconf.py``) and ``import-weights`` (OpenIBL -> our checkpoint).

The hub model must give the descriptors our own loaders give on the same input, carry its input
normalisation, and never download; an OpenIBL file imported with ``import-weights`` must give
``load_openibl``'s descriptors, and export -> import -> export must return the tensors bit for bit.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sfrs_core import cli
from sfrs_core.errors import CheckpointError
from sfrs_core.models.hub import ENTRY_TRUNKS
from sfrs_core.models.model import ModelConfig, build_model
from sfrs_core.models.openibl import export_openibl, load_openibl
from sfrs_core.training.checkpoint import load_checkpoint, load_model, model_payload, save_checkpoint
from sfrs_core.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def hub_load(entry: str, **kwargs):
    return torch.hub.load(str(ROOT), entry, source="local", **kwargs)


def descriptors(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and len(err) < 330, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    """A tiny MobileNetV2 model (random weights) with fitted PCA, saved as a run's gen1.pt."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(trunk="mobilenet_v2", num_clusters=4, pca_dim=8, pretrained=False)).eval()
    model.pca.fit(torch.nn.functional.normalize(torch.randn(24, model.vlad_dim), dim=1))
    path = save_checkpoint(tmp_path_factory.mktemp("run") / "gen1.pt", model_payload(model, generation=1))
    return model, path


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """A random VGG16 model (K=4, fitted PCA to 8, OpenIBL's input) and its OpenIBL export."""
    torch.manual_seed(1)
    config = ModelConfig(trunk="vgg16", num_clusters=4, pca_dim=8, pretrained=False, input_norm="matconvnet")
    model = build_model(config).eval()
    model.pca.fit(torch.nn.functional.normalize(torch.randn(16, model.vlad_dim), dim=1))
    folder = tmp_path_factory.mktemp("vgg")
    ours = save_checkpoint(folder / "gen3.pt", model_payload(model, generation=3))
    openibl = export_openibl(ours, folder / "vgg16_netvlad.pth").path
    return model, ours, openibl


# --------------------------------------------------------------------------- hub entry points


def test_entry_points_and_dependencies():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    public = {n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")}
    assert public == set(ENTRY_TRUNKS) == {"sfrs", "sfrs_vgg16", "sfrs_mobilenet", "sfrs_resnet18", "sfrs_resnet50"}
    assert {"torch", "torchvision"} <= set(module.dependencies)
    assert all(importlib.util.find_spec(dep) is not None for dep in module.dependencies)
    assert all(getattr(module, n).__doc__ for n in public)  # torch.hub.help shows them


def test_sfrs_gives_our_loaders_descriptors_and_preprocessing(mobile):
    trained, path = mobile
    model = hub_load("sfrs", weights=str(path))
    assert not any(m.training for m in model.modules())
    assert model.pca.is_fitted and model.config.trunk == "mobilenet_v2" and model.input_norm == "imagenet"
    x = torch.rand(2, 3, 64, 80)
    ours, _ = load_model(path)
    got = descriptors(model, x)
    assert got.shape == (2, 8)  # PCA-whitened
    assert torch.equal(got, descriptors(ours, x))
    torch.testing.assert_close(got, descriptors(trained, x), atol=1e-6, rtol=1e-5)

    # the transform: an image -> [0, 1] -> ImageNet mean/std, computed here independently
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    want = (pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    tensor = model.transform(Image.fromarray(pixels))
    np.testing.assert_allclose(tensor.permute(1, 2, 0).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(model.normalization(torch.from_numpy(pixels / 255.0).permute(2, 0, 1)).numpy(),
                               want.transpose(2, 0, 1), atol=1e-6)
    sized = hub_load("sfrs", weights=path, image_size=(32, 48))
    assert sized.transform(Image.fromarray(pixels)).shape == (3, 32, 48)


def test_trunk_entry_points_and_refusals(mobile):
    _, path = mobile
    x = torch.rand(1, 3, 48, 48)
    assert torch.equal(descriptors(hub_load("sfrs_mobilenet", weights=path), x), descriptors(load_model(path)[0], x))
    with pytest.raises(CheckpointError) as err:  # another trunk's file
        hub_load("sfrs_vgg16", weights=path)
    assert str(path) in str(err.value) and "mobilenet_v2" in str(err.value) and "'sfrs'" in str(err.value)
    with pytest.raises(ValueError, match=r"weights=None.*nothing is downloaded"):
        hub_load("sfrs")
    with pytest.raises(ValueError, match="only with weights=None"):
        hub_load("sfrs", weights=path, num_clusters=8)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        hub_load("sfrs", weights=path.with_name("gen9.pt"))
    # weights=None on a trunk entry point: an untrained model of the stated config
    fresh = hub_load("sfrs_mobilenet", num_clusters=8, pretrained=False)
    assert (fresh.config.trunk, fresh.config.num_clusters, fresh.pca) == ("mobilenet_v2", 8, None)
    assert fresh.input_norm == "imagenet"
    assert not fresh.training and descriptors(fresh, x).shape == (1, 8 * 96)


def test_latest_pt_of_a_run(mobile, tmp_path):
    """A run's resume checkpoint: mid-generation the student (architecture from config.json);
    saved at a generation's end, that generation's gen{g}.pt."""
    torch.manual_seed(2)
    model_cfg = ModelConfig(trunk="mobilenet_v2", num_clusters=4, pca_dim=8, pretrained=True)
    cfg = TrainConfig(data="data/x", run="r", model=model_cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    student = build_model(ModelConfig(trunk="mobilenet_v2", num_clusters=4, pca_dim=8, pretrained=False)).eval()
    latest = save_checkpoint(tmp_path / "latest.pt", {"generation": 1, "epoch": 0, "iteration": 5,
                                                      "student": student.state_dict(), "optimizer": {}})
    x = torch.rand(2, 3, 48, 64)
    model = hub_load("sfrs", weights=latest)
    assert model.input_norm == "imagenet" and not model.pca.is_fitted
    assert torch.equal(descriptors(model, x), descriptors(student, x))  # the VLAD: PCA not fitted yet

    trained, gen1 = mobile
    (tmp_path / "gen1.pt").write_bytes(gen1.read_bytes())
    save_checkpoint(tmp_path / "latest.pt", {"generation": 2, "epoch": 0, "iteration": 9}, keep_previous=True)
    assert torch.equal(descriptors(hub_load("sfrs", weights=latest), x), descriptors(load_model(gen1)[0], x))
    (tmp_path / "gen1.pt").unlink()
    with pytest.raises(CheckpointError, match="no model weights"):
        hub_load("sfrs", weights=latest)


# --------------------------------------------------------------------------- OpenIBL weights


def test_import_weights_gives_load_openibls_descriptors(vgg, tmp_path, capsys):
    trained, ours, openibl = vgg
    out = tmp_path / "imported" / "vgg16_netvlad.pt"
    assert cli.main(["import-weights", str(openibl), "--format", "openibl", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert str(out) in said and "embednetpca" in said and "K=4" in said and "matconvnet" in said
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left

    imported, payload = load_model(out)
    assert payload["model_config"]["input_norm"] == "matconvnet" and payload["imported_from"]["format"] == "openibl"
    assert imported.config.trunk == "vgg16" and imported.pca.is_fitted
    x = torch.rand(2, 3, 48, 64)
    reference = descriptors(load_openibl(openibl), x)
    assert reference.shape == (2, 8)
    assert torch.equal(descriptors(imported, x), reference)
    torch.testing.assert_close(reference, descriptors(trained, x), atol=1e-5, rtol=1e-5)
    # the hub reads OpenIBL's file and the imported checkpoint alike, with OpenIBL's input normalisation
    for weights in (openibl, out):
        model = hub_load("sfrs", weights=str(weights))
        assert model.input_norm == "matconvnet"
        assert torch.equal(descriptors(model, x), reference)


def test_export_import_export_round_trips_exactly(vgg, tmp_path):
    _, ours, openibl = vgg
    assert cli.main(["import-weights", str(openibl), "--out", str(tmp_path / "imported.pt")]) == 0
    assert cli.main(["export-weights", str(tmp_path / "imported.pt"), "--format", "openibl",
                     "--out", str(tmp_path / "again.pth")]) == 0
    first = torch.load(openibl, map_location="cpu", weights_only=True)
    again = torch.load(tmp_path / "again.pth", map_location="cpu", weights_only=True)
    assert list(again) == list(first)
    for key, value in first.items():
        assert again[key].dtype == value.dtype and torch.equal(again[key], value), key
    # and our tensors came back through OpenIBL's layout unchanged
    before, after = load_checkpoint(ours)["state_dict"], load_checkpoint(tmp_path / "imported.pt")["state_dict"]
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_import_refuses_to_overwrite(vgg, tmp_path, capsys):
    _, _, openibl = vgg
    out = tmp_path / "model.pt"
    out.write_bytes(b"precious")
    assert cli.main(["import-weights", str(openibl), "--out", str(out)]) == 2
    one_line_error(capsys, str(out), "--overwrite")
    assert out.read_bytes() == b"precious"
    assert cli.main(["import-weights", str(openibl), "--out", str(out), "--overwrite"]) == 0
    assert load_model(out)[0].config.num_clusters == 4
    assert cli.main(["import-weights", str(openibl), "--out", str(openibl), "--overwrite"]) == 2  # its own input
    one_line_error(capsys, str(openibl), "itself")


def _bad_file(kind: str, folder: Path, openibl: Path, ours: Path) -> tuple[Path, str]:
    """A file ``import-weights`` must refuse, and a word its error must hold."""
    if kind == "ours":  # one of our checkpoints, not OpenIBL's layout
        return ours, "not OpenIBL's"
    path = folder / f"{kind}.pth"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty"
    if kind == "garbage":
        path.write_text("these are not weights\n")
        return path, "not a torch checkpoint"
    if kind == "truncated":
        path.write_bytes(openibl.read_bytes()[:400])
        return path, "corrupt or truncated"
    state = torch.load(openibl, map_location="cpu", weights_only=True)
    torch.save({**state, "net_vlad.centroids": torch.zeros(4, 256)}, path)
    return path, "wrong shape"


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated", "ours", "shape"])
def test_import_bad_file_is_one_line_naming_it(vgg, tmp_path, capsys, kind):
    _, ours, openibl = vgg
    path, needle = _bad_file(kind, tmp_path, openibl, ours)
    out = tmp_path / "out.pt"
    assert cli.main(["import-weights", str(path), "--format", "openibl", "--out", str(out)]) == 2
    one_line_error(capsys, str(path), needle)
    assert not out.exists() and not (tmp_path / "manifest.json").exists()
