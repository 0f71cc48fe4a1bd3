r"""Entry point: `python -m tf_simclr.run --train_mode=pretrain|finetune ...`.

Flag names, meanings and defaults follow the official google-research/simclr
`tf2/run.py`, so its command lines run here; README.md lists the few defaults that
differ and the flags we added. This is one of the two modules that read absl
FLAGS: it turns them into a validated, frozen `Config` and hands that to
`tf_simclr.job.run`.

Exit status: 0 on success, 2 for bad flags or data (the message names the bad
value), 3 when training diverges (NaN/Inf loss; the last good checkpoint is kept),
143 after SIGTERM (a checkpoint was saved first).
"""


from absl import app, flags, logging

from tf_simclr import config as config_lib
from tf_simclr import errors


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per Config field: its name, type, default, help and choices."""
    for field in config_lib.flag_fields():
        name, default, kind = field.name, field.default, field.type
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        if choices and kind is str:
            flags.DEFINE_enum(name, default, choices, help_text, flag_values=flag_values)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif kind is int:  # resnet_depth too: an integer flag, its choices checked by validate
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def config_from_flags(flag_values=flags.FLAGS):
    """The frozen Config that the parsed flags describe (not yet validated).

    A distillation student takes the teacher's architecture (depth, width, SK, SE)
    for each of those flags not given (on the command line or in a flagfile).
    """
    config = config_lib.Config.from_flat(
        {name: flag_values[name].value for name in config_lib.field_names()})
    if config.train.train_mode == "distill" and config.train.teacher:
        inherited = {name: value for name, value in
                     config_lib.teacher_architecture(config.train.teacher).items()
                     if not flag_values[name].present}
        if inherited:
            logging.info("distill: the student takes the teacher's %s", inherited)
            config = config.replace(**inherited)
    return config


define_flags()
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only --flags.")
    # These import TensorFlow; after flag parsing keeps --help fast.
    from hub_export.actions import ExportAfterEval
    from tf_simclr import job
    config = config_from_flags()
    try:
        config.validate()
        job.run(config, after_eval=[ExportAfterEval()])
    except (errors.UsageError, errors.TrainingDiverged, errors.Terminated) as e:
        errors.exit_with(e, log=logging)


def entry_point():
    app.run(main)


if __name__ == "__main__":
    entry_point()
