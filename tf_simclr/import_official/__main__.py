r"""Entry point: `python -m tf_simclr.import_official` — Google's released SimCLR weights
as a tf_simclr model_dir.

    # a TF1 checkpoint (v1 or v2; prefix or folder), a TF1 hub module, a TF2
    # checkpoint or a TF2 SavedModel; gs:// paths work
    python -m tf_simclr.import_official \
        --source=gs://simclr-checkpoints/simclrv2/pretrained/r50_1x_sk1 --model_dir=/runs/r50
    # then, unchanged:
    python -m tf_simclr.run --train_mode=finetune --checkpoint=/runs/r50 ...
    python -m tf_simclr.probe --model_dir=/runs/r50 --dataset=...
    python -m hub_export --model_dir=/runs/r50 --export_dir=/runs/r50_hub

The architecture is detected from the variables' names and shapes (`--variant`
checks it instead); model_dir/import_report.json lists what was mapped, skipped
and freshly initialised. Exit status 2 with one line naming the problem for a
source that is not an official SimCLR checkpoint or does not fit the flags.
"""

from absl import app, flags, logging

from tf_simclr import errors

flags.DEFINE_string("source", None, "The official checkpoint: a TF1 prefix or folder, a TF1 "
                    "hub module, a TF2 checkpoint or a TF2 SavedModel folder.")
flags.DEFINE_string("model_dir", None, "The model_dir to write.")
flags.DEFINE_string("variant", None, "Expected architecture, e.g. r50_1x_sk1; refuse the "
                    "source if it is another (default: detect it).")
flags.DEFINE_enum("weights", "online", ["online", "ema"],
                  "Import the online weights or the exponential moving average of TF1 "
                  "SimCLRv2 checkpoints (ema_model/).")
flags.DEFINE_string("ft_proj_selector", "auto",
                    "Input of the fine-tuned classifier: 0 the encoder, j the j-th projection "
                    "layer; auto decides from the .meta graph, by running a SavedModel, or from "
                    "the path.")
flags.DEFINE_integer("image_size", None, "Input size of the model_dir's config (default 224, "
                     "32 for CIFAR-stem checkpoints); <= 32 selects the CIFAR stem.")
flags.DEFINE_bool("overwrite", False, "Replace a non-empty --model_dir.")
FLAGS = flags.FLAGS


def options_from_flags(values=FLAGS):
    from hub_export import variants
    from tf_simclr.import_official import importer
    if not values.source:
        raise errors.ConfigError("--source is not set; expected an official checkpoint, "
                                 "hub module or SavedModel.")
    selector = values.ft_proj_selector
    if selector != "auto":
        try:
            selector = int(selector)
        except ValueError:
            raise errors.ConfigError(f"--ft_proj_selector={selector} is not an integer; "
                                     "expected auto, 0, 1, ...") from None
        if selector < 0:
            raise errors.ConfigError(f"--ft_proj_selector={selector} is negative; expected "
                                     "auto or an index >= 0 (0: the encoder's output).")
    return importer.ImportOptions(
        source=values.source, model_dir=values.model_dir,
        variant=variants.parse(values.variant) if values.variant else None,
        weights=values.weights, ft_proj_selector=None if selector == "auto" else selector,
        image_size=values.image_size, overwrite=values.overwrite)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only --flags.")
    try:
        from tf_simclr.import_official import importer
        report = importer.import_official(options_from_flags())
    except errors.UsageError as e:
        errors.exit_with(e, log=logging)
    print(f"imported {report['variant']} ({report['source_kind']}) into "
          f"{report['model_dir']}: {len(report['mapped'])} variables mapped; "
          f"report in {report['model_dir']}/import_report.json")


def entry_point():
    app.run(main)


if __name__ == "__main__":
    entry_point()
