"""The architecture of an official checkpoint, from its names and shapes alone.

Depth and selective kernels come from how many encoder convolutions and BatchNorms
there are (`layer_counts`), the stem from the first kernels ([7,7,3,64w]: ImageNet;
[3,3,3,32w] then [3,3,32w,32w]: the ResNet-D stem of SK models; [3,3,3,64w]: CIFAR),
the width from the stem's filters, the heads from their layers' shapes.
"""

import dataclasses

from tf_simclr.errors import CheckpointError
from tf_simclr.models import resnet

SK_RATIO = 0.0625  # every released SK model


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What an official checkpoint holds, in tf_simclr's terms."""
    resnet_depth: int
    width_multiplier: float
    sk_ratio: float
    cifar_stem: bool
    num_proj_layers: int      # 0: the checkpoint has no projection head
    proj_out_dim: int
    num_classes: int          # 0: no supervised head

    @property
    def variant(self):
        """The official name, e.g. r50_2x_sk1 (hub_export.variants form)."""
        width = f"{self.width_multiplier:g}"
        return f"r{self.resnet_depth}_{width}x_sk{int(self.sk_ratio > 0)}"


def layer_counts(depth, sk, deep_stem):
    """(convolutions, BatchNorms) of the encoder of an official ResNet."""
    block_type, blocks = resnet.DEPTHS[depth]
    num_blocks = sum(blocks)
    per_block = 3 if block_type == "bottleneck" else 2
    convs = bns = per_block * num_blocks + len(blocks)  # + one shortcut per group
    if sk and block_type == "bottleneck":
        # The SK conv adds its mix reduce/expand convs and one BN (its own BN is bn2's).
        convs += 2 * num_blocks
        bns += num_blocks
    stem = 3 if deep_stem else 1
    return convs + stem, bns + stem


def _counts_table():
    rows = []
    for depth in sorted(resnet.DEPTHS):
        for sk in (False, True):
            for deep_stem in ((False, True) if sk else (False,)):
                rows.append(((depth, sk, deep_stem), layer_counts(depth, sk, deep_stem)))
    return rows


def detect(classified, source_path):
    """The Architecture of a classified source; CheckpointError if none fits."""
    shapes = classified.shapes
    num_convs, num_bns = len(classified.convs), len(classified.bns)
    if not num_convs:
        raise CheckpointError(
            f"--source={source_path} has no encoder variables under base_model/, "
            f"ema_model/base_model/ or resnet/ (scopes found: {classified.scopes()}); "
            "expected an official SimCLR checkpoint.")
    kernels = [shapes[name] for _, name in classified.convs[:3]]
    first = kernels[0]
    deep_stem = (len(kernels) > 1 and first[:3] == [3, 3, 3]
                 and kernels[1][:2] == [3, 3] and kernels[1][2] == first[3])
    fits = [key for key, counts in _counts_table() if counts == (num_convs, num_bns)]
    if not fits:
        known = ", ".join(f"R{d}{' SK' if sk else ''}{' (ResNet-D stem)' if ds else ''} "
                          f"{c}/{b}" for (d, sk, ds), (c, b) in _counts_table()
                          if d in (50, 101, 152) or not sk)
        raise CheckpointError(
            f"{num_convs} convolutions / {num_bns} BatchNorms in the encoder of "
            f"--source={source_path} match no official ResNet (convolutions/BatchNorms: "
            f"{known}).")
    matching = [key for key in fits if key[2] == deep_stem] or fits
    depth, sk, deep_stem = matching[0]
    stem_filters = kernels[2][3] if deep_stem else first[3]
    cifar_stem = not deep_stem and first[:2] == [3, 3]
    if not (deep_stem or first[:2] in ([7, 7], [3, 3])) or first[2] != 3:
        raise CheckpointError(
            f"the first encoder kernel of --source={source_path} is {first}; expected an "
            "official stem: [7,7,3,64w], [3,3,3,32w] (ResNet-D) or [3,3,3,64w] (CIFAR).")
    width = stem_filters / 64
    num_layers = len(classified.head_dense)
    if sorted(classified.head_dense) != list(range(num_layers)):
        raise CheckpointError(
            f"the projection head of --source={source_path} has layers "
            f"{sorted(classified.head_dense)}; expected nl_0..nl_{num_layers - 1}.")
    proj_out_dim = (shapes[classified.head_dense[num_layers - 1]][1] if num_layers else 128)
    kernel = classified.supervised.get("kernel")
    num_classes = shapes[kernel][1] if kernel else 0
    return Architecture(resnet_depth=depth, width_multiplier=width,
                        sk_ratio=SK_RATIO if sk else 0.0, cifar_stem=cifar_stem,
                        num_proj_layers=num_layers, proj_out_dim=proj_out_dim,
                        num_classes=num_classes)
