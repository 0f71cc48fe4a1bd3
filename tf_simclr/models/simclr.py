"""The SimCLR model: encoder + projection head (+ supervised head), and its assembly.

`SimCLRModel` receives its parts; `build_model(config, num_classes)` is the one place
where config fields become constructor keywords. The model sees a plain batch of
images [B,H,W,3] in [0, 1]: the training step concatenates the two views along the
batch (view 1 first), so there is no 6-channel packing as in the official code.

Checkpoint keys are attribute names: `tf.train.Checkpoint(model=model)` stores
`model/encoder/...`, `model/projection_head/...` and `model/supervised_head/...`, so
fine-tuning can restore the first two alone (`checkpointing.restore_pretrained`).
"""

import keras
import tensorflow as tf

from tf_simclr.config import TRAIN_MODES
from tf_simclr.models.heads import ProjectionHead, SupervisedHead
from tf_simclr.models.resnet import NUM_STAGES, ResNet

PROJ_HEAD_INPUT = "proj_head_input"
PROJ_HEAD_OUTPUT = "proj_head_output"
LOGITS_SUP = "logits_sup"


@keras.saving.register_keras_serializable(package="tf_simclr")
class SimCLRModel(keras.Model):
    """images [B,H,W,3] -> dict of official endpoint names.

    Keys: the encoder endpoints (`resnet.ENDPOINTS`), `proj_head_input` [B, D], and
    - pretrain: `proj_head_output` [B, out_dim] (float32), plus `logits_sup`
      [B, classes] (float32) from the online linear classifier on
      stop_gradient(hiddens[ft_proj_selector]) when a supervised head is given;
    - finetune: `logits_sup` from hiddens[ft_proj_selector]; the projection head runs
      only up to that entry, so `proj_head_output` is present only if it selects the
      last one. Projection layers beyond the selector are non-trainable (they get no
      gradient); the kept ones train. The encoder is frozen through
      `fine_tune_after_block` (see `ResNet.freeze_through`).

    Args:
        encoder: a `ResNet` (any layer returning a dict with 'final_avg_pool' and a
            `feature_dim` attribute).
        projection_head: a `ProjectionHead`.
        supervised_head: a `SupervisedHead` or None (no labels).
        train_mode: 'pretrain' or 'finetune'.
        ft_proj_selector: index into the hiddens list feeding the supervised head.
        lineareval_while_pretraining: must be True for a supervised head in pretraining.
        fine_tune_after_block: -1 trains everything; k in 0..4 freezes the encoder
            through stage k (finetune only, as official).
    """

    def __init__(self, encoder, projection_head, supervised_head=None, train_mode="pretrain",
                 ft_proj_selector=0, lineareval_while_pretraining=True,
                 fine_tune_after_block=-1, **kwargs):
        if train_mode not in TRAIN_MODES:
            raise ValueError(f"train_mode={train_mode!r} is not supported; expected one of "
                             f"{TRAIN_MODES}.")
        if fine_tune_after_block not in range(-1, NUM_STAGES):
            raise ValueError(f"fine_tune_after_block={fine_tune_after_block!r}; expected -1 "
                             "(train everything) or 0..4.")
        if train_mode == "pretrain" and fine_tune_after_block != -1:
            raise ValueError(f"fine_tune_after_block={fine_tune_after_block} applies to "
                             "train_mode='finetune'; expected -1 for pretraining.")
        if train_mode == "finetune" and supervised_head is None:
            raise ValueError("train_mode='finetune' needs a supervised_head; received None.")
        if (train_mode == "pretrain" and supervised_head is not None
                and not lineareval_while_pretraining):
            raise ValueError("A supervised_head in pretraining is the online linear "
                             "classifier; expected lineareval_while_pretraining=True or "
                             "supervised_head=None.")
        super().__init__(**kwargs)
        self.encoder = encoder
        self.projection_head = projection_head
        self.supervised_head = supervised_head
        self.train_mode = train_mode
        self.ft_proj_selector = ft_proj_selector
        self.lineareval_while_pretraining = lineareval_while_pretraining
        self.fine_tune_after_block = fine_tune_after_block
        self._selected = projection_head.hiddens_index(ft_proj_selector)
        if train_mode == "finetune":
            encoder.freeze_through(fine_tune_after_block)

    def build(self, input_shape):
        self.encoder.build(input_shape)
        self.projection_head.build((None, self.encoder.feature_dim))
        if self.supervised_head is not None:
            self.supervised_head.build(
                (None, self.projection_head.hidden_dims[self._selected]))
        if self.train_mode == "finetune":
            for layer in self.projection_head.linear_layers[self._selected:]:
                layer.trainable = False

    def call(self, images, training=None):
        outputs = dict(self.encoder(images, training=training))
        features = outputs["final_avg_pool"]
        head_layers = None if self.train_mode == "pretrain" else self._selected
        hiddens = self.projection_head(features, training=training, num_layers=head_layers)
        outputs[PROJ_HEAD_INPUT] = hiddens[0]
        if len(hiddens) == self.projection_head.num_linear_layers + 1:
            outputs[PROJ_HEAD_OUTPUT] = tf.cast(hiddens[-1], tf.float32)
        if self.supervised_head is not None:
            classifier_input = hiddens[self._selected]
            if self.train_mode == "pretrain":
                # The online linear evaluation must not train the encoder or the head.
                classifier_input = tf.stop_gradient(classifier_input)
            outputs[LOGITS_SUP] = tf.cast(self.supervised_head(classifier_input), tf.float32)
        return outputs

    def get_config(self):
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            encoder=serialize(self.encoder), projection_head=serialize(self.projection_head),
            supervised_head=(None if self.supervised_head is None
                             else serialize(self.supervised_head)),
            train_mode=self.train_mode, ft_proj_selector=self.ft_proj_selector,
            lineareval_while_pretraining=self.lineareval_while_pretraining,
            fine_tune_after_block=self.fine_tune_after_block)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "projection_head", "supervised_head"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_model(config, num_classes):
    """The SimCLR model of a `tf_simclr.config.Config`, built for its image size.

    Call it inside `strategy.scope()`. `num_classes` = 0 (unlabelled data) gives no
    supervised head; so does pretraining with lineareval_while_pretraining=False.
    `config.train.precision` becomes the dtype policy of every layer; the losses'
    inputs (`proj_head_output`, `logits_sup`) are float32 regardless.
    """
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes={num_classes!r}; expected an int >= 0 (0: no labels).")
    model_cfg, train_cfg = config.model, config.train
    # A distillation student is a fine-tuning model: only its loss differs.
    train_mode = "finetune" if config.trains_classifier else train_cfg.train_mode
    if train_mode == "finetune" and num_classes == 0:
        raise ValueError("train_mode='finetune' trains a classifier; received num_classes=0.")
    policy = keras.DTypePolicy(train_cfg.precision)
    encoder = ResNet(
        depth=model_cfg.resnet_depth, width_multiplier=model_cfg.width_multiplier,
        cifar_stem=config.cifar_stem, sk_ratio=model_cfg.sk_ratio, se_ratio=model_cfg.se_ratio,
        batch_norm_decay=model_cfg.batch_norm_decay, global_bn=model_cfg.global_bn,
        dtype=policy)
    projection_head = ProjectionHead(
        mode=model_cfg.proj_head_mode, out_dim=model_cfg.proj_out_dim,
        num_layers=model_cfg.num_proj_layers, batch_norm_decay=model_cfg.batch_norm_decay,
        global_bn=model_cfg.global_bn, name="projection_head", dtype=policy)
    supervised_head = None
    if num_classes and (train_mode == "finetune"
                        or train_cfg.lineareval_while_pretraining):
        supervised_head = SupervisedHead(num_classes, name="supervised_head", dtype=policy)
    model = SimCLRModel(
        encoder, projection_head, supervised_head, train_mode=train_mode,
        ft_proj_selector=model_cfg.ft_proj_selector,
        lineareval_while_pretraining=train_cfg.lineareval_while_pretraining,
        fine_tune_after_block=train_cfg.fine_tune_after_block, name="simclr", dtype=policy)
    size = config.data.image_size
    model.build((None, size, size, 3))
    return model


def zero_init_logits_layer(model):
    """Sets the supervised head's kernel and bias to zero (official zero_init_logits_layer).

    Needs a built model (build_model builds it); the official TF2 zeroed an empty
    variable list because its head was built lazily afterwards.
    """
    head = model.supervised_head
    if head is None or not head.built:
        raise ValueError("zero_init_logits_layer needs a built model with a supervised head; "
                         f"received supervised_head={head!r}"
                         f"{'' if head is None else ' (not built)'}.")
    for variable in head.dense.weights:
        variable.assign(tf.zeros(variable.shape, variable.dtype))
