"""Descriptor models: backbones, NetVLAD, region descriptors, PCA-whitening, the full model."""
from sfrs_core.models.backbones import (
    IMAGENET,
    MATCONVNET,
    TRUNKS,
    Backbone,
    Normalization,
    build_backbone,
    trunk_cuts,
)
from sfrs_core.models.model import ModelConfig, NetVLADModel, build_model
from sfrs_core.models.netvlad import NetVLAD, intra_l2, sample_local_descriptors
from sfrs_core.models.pca import PCAWhitening
from sfrs_core.models.regions import NUM_REGIONS, REGION_NAMES, region_descriptors, region_vlads

__all__ = [
    "IMAGENET", "MATCONVNET", "NUM_REGIONS", "REGION_NAMES", "TRUNKS",
    "Backbone", "ModelConfig", "NetVLAD", "NetVLADModel", "Normalization", "PCAWhitening",
    "build_backbone", "build_model", "intra_l2", "region_descriptors", "region_vlads",
    "sample_local_descriptors", "trunk_cuts",
]
