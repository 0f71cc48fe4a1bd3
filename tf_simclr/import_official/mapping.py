"""Which official variable goes into which variable of a tf_simclr model.

The encoder's layers are listed in the official creation order (stem; then per
block the shortcut first, conv1/BN, the 3x3 or the SK conv (conv, BN, mix reduce,
mix BN, mix expand), conv3/BN) and paired with the source's convolutions and
BatchNorms sorted by creation index; projection layer j pairs with nl_j, the
classifier with head_supervised. Every pair must agree in shape.
"""

import dataclasses
from typing import List

from tf_simclr.errors import CheckpointError
from tf_simclr.import_official.names import BN_ATTRIBUTES
from tf_simclr.models.layers import SelectiveKernelConv2D


@dataclasses.dataclass(frozen=True)
class Pair:
    """One official variable (by graph-form name) -> one of our variables."""
    source: str
    target: object  # a keras Variable


def encoder_layers(encoder):
    """(convolutions, BatchNorms) of a tf_simclr ResNet in the official creation order."""
    convs, bns = [], []
    stem = encoder.stem
    if stem.deep_conv1 is not None:
        convs += [stem.deep_conv1, stem.deep_conv2]
        bns += [stem.deep_bn1, stem.deep_bn2]
    convs.append(stem.conv)
    bns.append(stem.bn)
    for group in encoder.block_groups:
        for block in group.blocks:
            if block.shortcut is not None:
                convs.append(block.shortcut.conv)
                bns.append(block.shortcut.bn)
            convs.append(block.conv1)
            bns.append(block.bn1)
            if isinstance(block.conv2, SelectiveKernelConv2D):
                sk = block.conv2
                convs += [sk.conv, sk.mix_reduce, sk.mix_expand]
                bns += [sk.bn, sk.mix_bn]
            else:
                convs.append(block.conv2)
                bns.append(block.bn2)
            if hasattr(block, "conv3"):
                convs.append(block.conv3)
                bns.append(block.bn3)
    return convs, bns


def _bn_variables(layer):
    return {"gamma": layer.gamma, "beta": layer.beta, "moving_mean": layer.moving_mean,
            "moving_variance": layer.moving_variance}


def _check_shape(source_name, shape, target, path):
    if list(shape) != list(target.shape):
        raise CheckpointError(
            f"{source_name} is {list(shape)}; {path} needs {list(target.shape)} "
            "(another architecture than the one detected?).")


def _pair_bn(names, layer, shapes, pairs):
    ours = _bn_variables(layer)
    for attribute in BN_ATTRIBUTES:
        name, target = names.get(attribute), ours[attribute]
        if (name is None) != (target is None):
            what = (f"{layer.path} has no {attribute}" if target is None
                    else f"the source has no {attribute} for {layer.path}")
            raise CheckpointError(f"{what}; expected both sides to have it "
                                  f"(source BatchNorm: {sorted(names.values())}).")
        if name is not None:
            _check_shape(name, shapes[name], target, target.path)
            pairs.append(Pair(name, target))


def plan(classified, model):
    """[Pair] for every variable the source and the built `model` share; the
    encoder entirely, the heads where the source has them."""
    shapes, pairs = classified.shapes, []
    convs, bns = encoder_layers(model.encoder)
    if len(convs) != len(classified.convs) or len(bns) != len(classified.bns):
        raise CheckpointError(
            f"the source has {len(classified.convs)} convolutions / {len(classified.bns)} "
            f"BatchNorms in its encoder; the model has {len(convs)} / {len(bns)}.")
    for (_, name), layer in zip(classified.convs, convs):
        _check_shape(name, shapes[name], layer.kernel, layer.kernel.path)
        pairs.append(Pair(name, layer.kernel))
    for (_, names), layer in zip(classified.bns, bns):
        _pair_bn(names, layer, shapes, pairs)
    head = model.projection_head
    if classified.head_dense:
        if len(classified.head_dense) != len(head.linear_layers):
            raise CheckpointError(
                f"the source's projection head has {len(classified.head_dense)} layers; "
                f"the model's has {len(head.linear_layers)}.")
        for index, layer in enumerate(head.linear_layers):
            name = classified.head_dense[index]
            _check_shape(name, shapes[name], layer.dense.kernel, layer.dense.kernel.path)
            pairs.append(Pair(name, layer.dense.kernel))
            _pair_bn(classified.head_bn.get(index, {}), layer.bn, shapes, pairs)
    if classified.supervised:
        dense = model.supervised_head.dense
        for attribute, target in (("kernel", dense.kernel), ("bias", dense.bias)):
            name = classified.supervised.get(attribute)
            if name is None:
                raise CheckpointError(f"the source's head_supervised has no {attribute}; "
                                      "expected kernel and bias.")
            _check_shape(name, shapes[name], target, target.path)
            pairs.append(Pair(name, target))
    return pairs


def unassigned(model, pairs) -> List[object]:
    """Variables of `model` no pair assigns (freshly initialised)."""
    assigned = {id(pair.target) for pair in pairs}
    return [v for v in model.variables if id(v) not in assigned]


def check_once(pairs):
    """CheckpointError if a variable of ours or of the source is in two pairs."""
    by_source, by_target = {}, {}
    for pair in pairs:
        if pair.source in by_source:
            raise CheckpointError(f"{pair.source} would be assigned to both "
                                  f"{by_source[pair.source]} and {pair.target.path}; "
                                  "expected one variable each.")
        if id(pair.target) in by_target:
            raise CheckpointError(f"{pair.target.path} would be assigned from both "
                                  f"{by_target[id(pair.target)]} and {pair.source}; "
                                  "expected one source each.")
        by_source[pair.source] = pair.target.path
        by_target[id(pair.target)] = pair.source
