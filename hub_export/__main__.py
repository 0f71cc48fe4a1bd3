"""Command line: export tf_simclr models as TF-Hub reusable SavedModels.

    # a trained run: the model of DIR/config.json with DIR's latest checkpoint
    python -m hub_export --model_dir=DIR --export_dir=OUT [--checkpoint=DIR/ckpt-N]
    # an untrained architecture (random weights)
    python -m hub_export --variant=r50_1x --init=random --export_dir=OUT [--image_size=224]
    # several architectures, each into OUT/<variant>
    python -m hub_export --variants=r50_1x,r50_2x,r50_4x --init=random --export_dir=OUT

Add --tar_gz for an OUT.tar.gz in TF-Hub's compressed format, --overwrite to
replace an existing OUT. Bad arguments exit with status 2 and a one-line message.
This is the only module of hub_export that reads flags.
"""

import os
import sys

from absl import app, flags, logging

from hub_export import variants as variants_lib
from tf_simclr import errors
from tf_simclr.errors import ExportError


def define_flags(flag_values):
    """Defines this command's flags on `flag_values` (a private absl FlagValues, so
    that the names do not clash with tf_simclr.run's flags in one process)."""
    flags.DEFINE_string("model_dir", None, "A tf_simclr model_dir: config.json and "
                        "checkpoints.", flag_values=flag_values)
    flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (or a directory) to export "
                        "instead of model_dir's latest; the config still comes from "
                        "--model_dir.", flag_values=flag_values)
    flags.DEFINE_string("export_dir", None, "Where the module goes (must not exist unless "
                        "--overwrite); with --variants, the parent of one module per variant.",
                        flag_values=flag_values)
    flags.DEFINE_string("variant", None, "An architecture name, e.g. r50_1x, r50_2x, r50_4x, "
                        "r101_1x_sk, r18_0.5x (r{depth}_{width}x[_sk]); needs --init=random.",
                        flag_values=flag_values)
    flags.DEFINE_list("variants", None, "Comma-separated variant names, each exported into "
                      "export_dir/<variant>; needs --init=random.", flag_values=flag_values)
    flags.DEFINE_enum("init", "checkpoint", ["checkpoint", "random"], "checkpoint: weights "
                      "from --model_dir; random: an untrained --variant/--variants.",
                      flag_values=flag_values)
    flags.DEFINE_integer("image_size", None, "Input resolution a variant is built for "
                         "(default 224; <= 32 selects the CIFAR stem). A model_dir's comes "
                         "from its config.", flag_values=flag_values)
    flags.DEFINE_bool("tar_gz", False, "Also write <module>.tar.gz in TF-Hub's compressed "
                      "format.", flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "Replace an existing export (after the new one is "
                      "complete).", flag_values=flag_values)


def parse_flags(argv):
    """argv (program name first) -> parsed FlagValues; ExportError for bad flags."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    if any(arg in ("--help", "-h", "--helpfull") for arg in argv[1:]):
        print(__doc__)
        print(flag_values.get_help())
        sys.exit(0)
    try:
        rest = flag_values(list(argv))
    except flags.Error as error:
        raise ExportError(str(error)) from None
    if len(rest) > 1:
        raise ExportError(f"unexpected arguments {rest[1:]}; expected only --flags.")
    return flag_values


DEFAULT_IMAGE_SIZE = 224




def _plan(values):
    """[(kind, source, export_dir)] from the flag values; ExportError if inconsistent."""
    export_dir = values.export_dir
    if not export_dir:
        raise ExportError("--export_dir is not set; expected the directory to write the "
                         "module to.")
    named = values.variant is not None or values.variants is not None
    if values.variant is not None and values.variants is not None:
        raise ExportError(f"--variant={values.variant} and --variants="
                         f"{','.join(values.variants)}: expected one of them.")
    if values.init == "random":
        if not named:
            raise ExportError("--init=random needs --variant or --variants (e.g. r50_1x).")
        if values.model_dir or values.checkpoint:
            raise ExportError(f"--init=random builds an untrained --variant; it contradicts "
                             f"--model_dir={values.model_dir} / --checkpoint={values.checkpoint}.")
        image_size = values.image_size or DEFAULT_IMAGE_SIZE
        if values.variant is not None:
            return [("variant", variants_lib.parse(values.variant), export_dir, image_size)]
        chosen = variants_lib.parse_list(values.variants)
        return [("variant", v, os.path.join(export_dir, v.name), image_size) for v in chosen]
    if named:
        raise ExportError(f"--variant/--variants export untrained architectures and need "
                         f"--init=random (received --init={values.init}); a trained model "
                         "comes from --model_dir.")
    if not values.model_dir:
        raise ExportError("--model_dir is not set; expected a tf_simclr model_dir (or "
                         "--variant=... --init=random for an untrained architecture).")
    if not os.path.isdir(values.model_dir):
        raise ExportError(f"--model_dir={values.model_dir} is not a directory.")
    if values.image_size is not None:
        raise ExportError(f"--image_size={values.image_size} applies to --variant; the model "
                         f"of --model_dir={values.model_dir} keeps the image_size of its "
                         "config.json.")
    return [("checkpoint", (values.model_dir, values.checkpoint), export_dir, None)]


def _check_targets(plan, values):
    """Fails before any work if an export (or its .tar.gz) exists without --overwrite."""
    if values.overwrite:
        return
    for _, _, export_dir, _ in plan:
        targets = [export_dir] + ([export_dir + ".tar.gz"] if values.tar_gz else [])
        for target in targets:
            if os.path.lexists(target):
                raise ExportError(f"--export_dir: {os.path.abspath(target)} already exists; "
                                 "expected a new path (or --overwrite to replace it).")


def run(values):
    """Exports what the flag values describe; returns the module paths."""
    plan = _plan(values)
    _check_targets(plan, values)
    from hub_export import exporter  # imports TensorFlow; keeps --help and usage errors fast
    paths = []
    for kind, source, export_dir, image_size in plan:
        if kind == "variant":
            path = exporter.export_variant(source, export_dir, image_size=image_size,
                                           overwrite=values.overwrite, tar_gz=values.tar_gz)
        else:
            model_dir, checkpoint = source
            path = exporter.export_from_checkpoint(model_dir, export_dir, checkpoint=checkpoint,
                                                   overwrite=values.overwrite,
                                                   tar_gz=values.tar_gz)
        logging.info("exported %s", path)
        print(path)
        paths.append(path)
    return paths


def main(argv):
    """Parses argv (program name first), exports; exits with status 2 on bad arguments."""
    try:
        run(parse_flags(argv))
    except errors.UsageError as error:
        errors.exit_with(error)
    return 0


def entry_point():
    # absl parses the global FLAGS (only the program name here: none of ours live
    # there); main parses the arguments with its private set.
    def program_name_only(argv):
        flags.FLAGS(argv[:1])
        return argv

    app.run(main, flags_parser=program_name_only)


if __name__ == "__main__":
    entry_point()
