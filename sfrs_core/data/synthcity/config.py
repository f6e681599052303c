"""SynthCity configuration and presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

META_FILE = "synthcity.json"  # a dataset's metadata (config, classes, counts): written last, when it is complete


@dataclass(frozen=True)
class DistrictSpec:
    """One split's district: a grid of ``blocks_x`` × ``blocks_y`` city blocks."""

    blocks_x: int
    blocks_y: int
    queries: int


@dataclass(frozen=True)
class SynthCityConfig:
    """Everything that determines a SynthCity dataset; same config -> same bytes."""

    seed: int = 0
    # A real place: downtown Pittsburgh (UTM 17T), so coordinates look like the paper's data.
    anchor_lat: float = 40.4406
    anchor_lon: float = -79.9959
    train: DistrictSpec = DistrictSpec(3, 3, 300)
    val: DistrictSpec = DistrictSpec(2, 1, 100)
    test: DistrictSpec = DistrictSpec(2, 2, 200)
    district_gap_m: float = 400.0  # empty ground between districts: splits are disjoint
    block_m: float = 52.0  # street centre line to street centre line
    road_half_width_m: float = 4.5
    sidewalk_m: float = 3.0
    db_spacing_m: float = 8.0  # one database place every few metres along every street
    db_headings: int = 8  # views per place, evenly spaced (Pittsburgh has 12)
    width: int = 320
    height: int = 240
    fov_deg: float = 65.0
    camera_height_m: float = 2.5
    shop_fraction: float = 0.55  # share of building lots with a unique shop sign
    # Query appearance change: probabilities of each condition and of each perturbation.
    p_dusk: float = 0.2
    p_night: float = 0.25
    p_color_shift: float = 0.5
    p_blur: float = 0.3
    p_occluder: float = 0.35
    query_lateral_m: float = 2.5  # queries stand up to this far off the street centre line
    jpeg_quality: int = 90
    render_distance_m: float = 160.0
    # The paper's challenges, as knobs. Each default leaves it off (and the city byte-identical to
    # the one rendered before the knob existed); the ``challenge`` preset turns them all on.
    #: Repetition: share of building lots built from one of ``facade_designs`` shared designs
    #: (facade, height, door and a chain store's sign and awning), the same in every block, so
    #: global appearance misleads.
    facade_repeat: float = 0.0
    facade_designs: int = 6
    #: Change between traversals: share of parked vehicles and people that differ (gone, or
    #: another model) between the database capture and each query's capture.
    traversal_change: float = 0.0
    #: Probability that a query was captured in another season (autumn or bare street trees).
    p_season: float = 0.0
    #: Discriminative detail: shop signs' size (0.9 m tall and 3.5-7.5 m long at 1.0).
    sign_scale: float = 1.0
    #: GPS and compass error of the recorded tags (standard deviations; one GPS error per database
    #: place, shared by its headings, as a panorama's): positives within 10 m that look elsewhere.
    gps_noise_m: float = 0.0
    heading_noise_deg: float = 0.0

    def __post_init__(self):
        for name in ("facade_repeat", "traversal_change", "p_season"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SynthCity {name} must lie in [0, 1], not {getattr(self, name)}")
        if not 0.2 <= self.sign_scale <= 1.0:  # a taller sign would reach the first floor's windows
            raise ValueError(f"SynthCity sign_scale must lie in [0.2, 1], not {self.sign_scale}")
        if self.facade_designs < 1:
            raise ValueError(f"SynthCity facade_designs must be at least 1, not {self.facade_designs}")
        if self.gps_noise_m < 0 or self.heading_noise_deg < 0:
            raise ValueError("SynthCity gps_noise_m and heading_noise_deg must not be negative")

    @property
    def challenges(self) -> dict[str, float]:
        """The challenge knobs that are on, by name (empty for the plain city)."""
        off = {"facade_repeat": 0.0, "traversal_change": 0.0, "p_season": 0.0, "sign_scale": 1.0,
               "gps_noise_m": 0.0, "heading_noise_deg": 0.0}
        return {k: getattr(self, k) for k, v in off.items() if getattr(self, k) != v}

    def to_dict(self) -> dict:
        """Plain-JSON form, for ``synthcity.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SynthCityConfig":
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown SynthCity config keys: {sorted(unknown)}")
        values = dict(data)
        for split in ("train", "val", "test"):
            if isinstance(values.get(split), dict):
                values[split] = DistrictSpec(**values[split])
        return cls(**values)

    def with_seed(self, seed: int) -> "SynthCityConfig":
        return replace(self, seed=seed)


PRESETS: dict[str, SynthCityConfig] = {
    # For tests: a few hundred images, seconds.
    "tiny": SynthCityConfig(
        train=DistrictSpec(2, 1, 40), val=DistrictSpec(1, 1, 16), test=DistrictSpec(1, 1, 24),
        db_spacing_m=14.0, width=160, height=120,
    ),
    # For the app and the demo models: a few thousand images, a couple of minutes on 2 cores.
    "demo": SynthCityConfig(),
    # The demo city with the paper's challenges on: half the lots share one of six designs (chain
    # stores included), half the parked cars and people change between captures, half the queries
    # come from another season, smaller signs, and GPS/compass error in the tags.
    "challenge": SynthCityConfig(
        facade_repeat=0.5, facade_designs=6, traversal_change=0.5, p_season=0.5, sign_scale=0.8,
        gps_noise_m=3.0, heading_noise_deg=5.0,
    ),
    # For scale checks: tens of thousands of images.
    "large": SynthCityConfig(
        train=DistrictSpec(8, 6, 3000), val=DistrictSpec(4, 3, 500), test=DistrictSpec(6, 4, 1000),
        db_spacing_m=6.0, db_headings=12, width=480, height=360,
    ),
}


def preset(name: str, seed: int | None = None) -> SynthCityConfig:
    """A named preset, optionally with another seed."""
    if name not in PRESETS:
        raise ValueError(f"unknown SynthCity preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]
    return cfg if seed is None else cfg.with_seed(seed)
