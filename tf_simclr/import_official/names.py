"""Official variable names -> what they are: encoder convs and BNs by creation index,
projection-head layers, the supervised head, and the extras to skip.

TF1 graph names and TF2 full names share one scheme (checkpoint_import.md §2):
`tf.layers` and Keras number layers of one type in creation order, so the k in
`conv2d_k` / `batch_normalization_k` (also `sync_batch_normalization_k`) orders
the encoder's convolutions and BatchNorms; TF2's numbering is process-global, so
only the order counts, not the values. Heads are `head_contrastive/nl_j/...`
(TF1) or `projection_head/nl_j/...` (TF2) and `head_supervised/linear_layer/...`.
"""

import dataclasses
import re
from typing import Dict, List, Tuple

BN_ATTRIBUTES = ("gamma", "beta", "moving_mean", "moving_variance")
EMA_SCOPE = "ema_model/"
ENCODER_SCOPES = ("base_model", "resnet")
HEAD_SCOPES = ("head_contrastive", "projection_head")
SUPERVISED_SCOPE = "head_supervised"

_CONV = re.compile(r"(?:^|/)conv2d(?:_(\d+))?/kernel$")
_BN = re.compile(r"(?:^|/)(?:sync_)?batch_normalization(?:_(\d+))?/(" +
                 "|".join(BN_ATTRIBUTES) + r")$")
_DENSE = re.compile(r"(?:^|/)dense(?:_\d+)?/(kernel|bias)$")
_HEAD_LAYER = re.compile(r"(?:^|/)nl_(\d+)/")
# What official checkpoints hold besides the model, and why each is skipped.
_EXTRAS = (
    (re.compile(r"(^|/)global_step$|^save_counter$"), "step counter"),
    (re.compile(r"/Momentum$|^optimizer/|/\.OPTIMIZER_SLOT/"), "optimizer state"),
    (re.compile(r"^memory"), "memory bank"),
    (re.compile(r"^learning_rate$|^iter(ations)?$|^momentum$|^decay$"), "optimizer state"),
)


@dataclasses.dataclass
class Classified:
    """The names of one branch (online or EMA) of a source, by role."""
    convs: List[Tuple[int, str]]                 # encoder kernels in creation order
    bns: List[Tuple[int, Dict[str, str]]]        # encoder BNs: attribute -> name
    head_dense: Dict[int, str]                   # projection layer j -> kernel name
    head_bn: Dict[int, Dict[str, str]]           # projection layer j -> BN attributes
    supervised: Dict[str, str]                   # kernel / bias -> name
    skipped: Dict[str, List[str]]                # reason -> names
    unknown: List[str]                           # neither mapped nor a known extra
    has_ema: bool
    shapes: Dict[str, list]                      # every name of the source -> shape

    def scopes(self):
        """The sorted top-level scopes of the source's names."""
        return sorted({name.split("/", 1)[0] for name in self.shapes})


def _index(match):
    return int(match.group(1) or 0)


def classify(shapes, keys, weights="online"):
    """Sorts graph-form names (`shapes`: name -> shape; `keys`: name -> checkpoint
    key) into roles for the `weights` branch: 'online' (base_model/...) or 'ema'
    (ema_model/...)."""
    names = list(shapes)
    convs, bns = {}, {}
    head_dense, head_bn, supervised = {}, {}, {}
    skipped, unknown = {}, []
    has_ema = any(name.startswith(EMA_SCOPE) for name in names)

    def skip(reason, name):
        skipped.setdefault(reason, []).append(name)

    for name in sorted(names):
        key = keys.get(name, name)
        extra = next((why for pattern, why in _EXTRAS
                      if pattern.search(name) or pattern.search(key)), None)
        if extra:
            skip(extra, name)
            continue
        in_ema = name.startswith(EMA_SCOPE)
        local = name[len(EMA_SCOPE):] if in_ema else name
        scope = local.split("/", 1)[0]
        # The supervised head is trained online only (EMA averages encoder and head).
        if scope == SUPERVISED_SCOPE and not in_ema:
            dense = _DENSE.search(local)
            if dense:
                supervised[dense.group(1)] = name
            else:
                unknown.append(name)
            continue
        if in_ema != (weights == "ema"):
            skip("EMA weights (--weights=ema imports them)" if in_ema
                 else "online weights (--weights=online imports them)", name)
            continue
        if scope in ENCODER_SCOPES:
            conv, bn = _CONV.search(local), _BN.search(local)
            if conv:
                convs[_index(conv)] = name
            elif bn:
                bns.setdefault(_index(bn), {})[bn.group(2)] = name
            else:
                unknown.append(name)
        elif scope in HEAD_SCOPES:
            layer, dense, bn = (_HEAD_LAYER.search(local), _DENSE.search(local),
                                _BN.search(local))
            if layer and dense and dense.group(1) == "kernel":
                head_dense[int(layer.group(1))] = name
            elif layer and bn:
                head_bn.setdefault(int(layer.group(1)), {})[bn.group(2)] = name
            else:
                unknown.append(name)
        else:
            unknown.append(name)
    return Classified(convs=sorted(convs.items()), bns=sorted(bns.items()),
                      head_dense=head_dense, head_bn=head_bn, supervised=supervised,
                      skipped=skipped, unknown=unknown, has_ema=has_ema,
                      shapes={name: list(shape) for name, shape in shapes.items()})
