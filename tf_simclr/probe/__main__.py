r"""Entry point: `python -m tf_simclr.probe` — the linear probe and kNN of an encoder.

    # a tf_simclr run (its config.json and latest checkpoint, or --checkpoint=PREFIX)
    python -m tf_simclr.probe --model_dir=/runs/fmnist
    # with the raw-pixel and random-weight baselines, in one table
    python -m tf_simclr.probe --model_dir=/runs/fmnist --baselines
    # any image feature-vector SavedModel, on the data the flags name
    python -m tf_simclr.probe --hub_module=/runs/fmnist/saved_model/235 \
        --dataset=fashion_mnist --train_split=train --eval_split=test --image_size=28 \
        --output_dir=/tmp/probe
    # a baseline alone: --baseline=pixels, or --baseline=random (the architecture of
    # --model_dir's config, or of the model flags)

With --model_dir the run's config.json gives the data and model flags that are not
on the command line (flags given here override it, e.g. --eval_split); the probe's
own flags (--probe_*) and the hardware flags always come from this command. Everything is written
to --output_dir (default MODEL_DIR/probe): cached features, probe_result.json,
probe_table.md and neighbours.png. Exit status 2 for bad flags, data, checkpoints
or modules, with one line naming the bad value.
"""

import dataclasses
import os

from absl import app, flags, logging

from tf_simclr import config as config_lib
from tf_simclr import errors
from tf_simclr import run as run_flags

BASELINES = ("none", "pixels", "random")

flags.DEFINE_string("hub_module", None, "Probe this image feature-vector SavedModel.")
flags.DEFINE_enum("baseline", "none", BASELINES,
                  "Probe a baseline instead: raw pixels, or the architecture with random "
                  "weights (drawn from --seed).")
flags.DEFINE_bool("baselines", False,
                  "Also probe raw pixels and the random-weight encoder, in one table.")
flags.DEFINE_string("output_dir", None, "Where the probe writes (default MODEL_DIR/probe).")
flags.DEFINE_bool("neighbours", True, "Write neighbours.png (the first encoder's nearest "
                  "train images of some test images).")
FLAGS = flags.FLAGS
PROBE_DIRNAME = "probe"


def config_from_flags(flag_values=FLAGS):
    """The Config to probe with: model_dir's config.json (when it is a run) with the
    flags given on the command line applied over it, else the flags alone."""
    from_flags = run_flags.config_from_flags(flag_values)
    model_dir = flag_values.model_dir
    uses_run = model_dir and not flag_values.hub_module
    if not uses_run:
        return from_flags
    if flag_values.baseline == "pixels" and not os.path.exists(
            os.path.join(model_dir, config_lib.CONFIG_FILENAME)):
        return from_flags
    explicit = {name: flag_values[name].value for name in config_lib.field_names()
                if flag_values[name].present}
    # The probe's protocol and the hardware are this command's, not the run's.
    loaded = dataclasses.replace(config_lib.load(model_dir), probe=from_flags.probe,
                                 hardware=from_flags.hardware)
    return loaded.replace(**explicit)


def _validate(config, values):
    for group in ("data", "model", "probe", "hardware"):
        getattr(config, group).validate()
    if config.train.eval_batch_size < 1:
        raise config_lib.ConfigError(f"--eval_batch_size={config.train.eval_batch_size} is "
                                     "out of range; expected a value >= 1.")
    if values.hub_module and values.model_dir:
        raise config_lib.ConfigError(
            f"--hub_module={values.hub_module} contradicts --model_dir={values.model_dir}; "
            "expected one source (the data flags describe the data for a hub module).")
    if not (values.hub_module or values.model_dir or values.baseline != "none"):
        raise config_lib.ConfigError("nothing to probe; expected --model_dir, --hub_module "
                                     "or --baseline=pixels|random.")
    if not (values.output_dir or values.model_dir):
        raise config_lib.ConfigError("--output_dir is not set; expected a directory for the "
                                     "probe's features and results (it defaults to "
                                     "MODEL_DIR/probe only with --model_dir).")


def _encoders(config, values):
    from hub_export import feature_module
    from tf_simclr.probe import encoders
    if values.hub_module:
        main = feature_module.hub_encoder(values.hub_module, config.data.image_size)
    elif values.baseline == "pixels":
        main = encoders.pixels(config)
    elif values.baseline == "random":
        main = encoders.random_encoder(config, config.train.seed)
    elif values.checkpoint:
        main = encoders.from_checkpoint(config, values.checkpoint, "--checkpoint")
    else:
        main = encoders.from_checkpoint(config, values.model_dir, "--model_dir")
    chosen = [main]
    if values.baselines:
        chosen += [e for e in encoders.baselines(config) if e.name != main.name]
    return chosen


def run(config, values):
    """Probes what `values` names under `config`; returns the probe result."""
    from tf_simclr import data, input_pipeline
    from tf_simclr.probe import protocol
    from tf_simclr.train import strategy as strategy_lib
    _validate(config, values)
    output_dir = values.output_dir or os.path.join(values.model_dir, PROBE_DIRNAME)
    chosen = _encoders(config, values)
    source = data.build_source(config.data, seed=config.train.seed)
    input_pipeline.check_image_size(config, source.info)
    strategy = strategy_lib.make_strategy(config.hardware)
    strategy_lib.check_single_host(strategy, "the probe")
    strategy_lib.check_batch_divides(config.train.eval_batch_size, strategy, "eval_batch_size")
    neighbours_png = os.path.join(output_dir, "neighbours.png") if values.neighbours else None
    return protocol.probe(chosen, strategy, source, config, output_dir, neighbours_png)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only --flags.")
    try:
        run(config_from_flags(), FLAGS)
    except errors.UsageError as e:
        errors.exit_with(e, log=logging)


def entry_point():
    app.run(main)


if __name__ == "__main__":
    entry_point()
