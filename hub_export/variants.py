"""Architecture names for exports: r{depth}_{width}x[_sk|_sk0|_sk1].

The names of the official SimCLR checkpoints (r50_1x_sk0, r152_3x_sk1, ...) and the
short forms of the SimCLRv1 releases (r50_1x, r50_2x, r50_4x). `_sk` / `_sk1` turn on
selective kernels with the SimCLRv2 ratio 0.0625 (and ResNet-D); no suffix or `_sk0`
is the plain ResNet. Widths may be fractional (r18_0.5x) for small test models.
"""

import dataclasses
import re

from tf_simclr import config as config_lib
from tf_simclr.errors import ExportError

SK_RATIO = 0.0625
VALID_FORMS = ("r{depth}_{width}x, r{depth}_{width}x_sk, r{depth}_{width}x_sk0 or "
               "r{depth}_{width}x_sk1 with depth in "
               + "/".join(str(d) for d in config_lib.RESNET_DEPTHS)
               + " and width > 0, e.g. r50_1x, r50_2x, r50_4x, r101_1x_sk, r18_0.5x")
_PATTERN = re.compile(r"^r(?P<depth>\d+)_(?P<width>\d+(?:\.\d+)?)x(?P<sk>_sk[01]?)?$")


class VariantError(ExportError):
    """A variant name that does not describe a supported architecture."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One architecture: ResNet depth, width multiplier and selective kernels."""
    name: str
    resnet_depth: int
    width_multiplier: float
    sk_ratio: float

    @property
    def feature_dim(self):
        """Width of final_avg_pool: 512 (18/34) or 2048 (50+) times the width."""
        expansion = 1 if self.resnet_depth in (18, 34) else 4
        return expansion * max(1, int(round(512 * self.width_multiplier)))

    def config(self, image_size=224, base=None):
        """`base` (default Config()) with this architecture and image size."""
        base = config_lib.Config() if base is None else base
        return base.replace(resnet_depth=self.resnet_depth,
                            width_multiplier=self.width_multiplier,
                            sk_ratio=self.sk_ratio, image_size=image_size)


def parse(name):
    """The Variant that `name` describes; VariantError listing the valid forms otherwise."""
    match = _PATTERN.match(name.strip().lower()) if isinstance(name, str) else None
    if match is None:
        raise VariantError(f"unknown variant {name!r}; expected {VALID_FORMS}.")
    depth = int(match.group("depth"))
    if depth not in config_lib.RESNET_DEPTHS:
        raise VariantError(f"variant {name!r} has depth {depth}; expected {VALID_FORMS}.")
    width = float(match.group("width"))
    if width <= 0 or round(64 * width) < 1:
        raise VariantError(f"variant {name!r} has width {match.group('width')}x, which leaves "
                           f"the stem without filters; expected {VALID_FORMS}.")
    sk = match.group("sk") in ("_sk", "_sk1")
    return Variant(name=name.strip().lower(), resnet_depth=depth, width_multiplier=width,
                   sk_ratio=SK_RATIO if sk else 0.0)


def parse_list(names):
    """A comma-separated list (or a sequence) of names -> [Variant], no duplicates."""
    if isinstance(names, str):
        names = names.split(",")
    items = [n.strip() for n in names if n.strip()]
    if not items:
        raise VariantError(f"no variant named; expected a comma-separated list of "
                           f"{VALID_FORMS}.")
    variants = [parse(n) for n in items]
    seen = set()
    for variant in variants:
        if variant.name in seen:
            raise VariantError(f"variant {variant.name!r} is listed twice; each is exported "
                               "into export_dir/<variant>.")
        seen.add(variant.name)
    return variants
