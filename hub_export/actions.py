"""Actions a training job runs after each evaluation (Orbit's `actions` idea).

`tf_simclr.job.run(config, after_eval=[...])` calls every action on the chief as
`action(config, model, step)` and merges the dict it returns into that
evaluation's result. The job never imports this package: the entry point
(`tf_simclr.run`) hands the actions in, so the library stays below the exporter.
"""

import os
import shutil

from absl import logging

from hub_export import exporter

SAVED_MODEL_DIRNAME = "saved_model"


class ExportAfterEval:
    """Official: a SavedModel per evaluation in model_dir/saved_model/<step>, pruned.

    Keeps the newest `config.train.keep_hub_module_max` exports (0: no export). A
    re-evaluation of the same step replaces its export only once the new one is whole.
    Returns {"saved_model": path or None}.
    """

    def __call__(self, config, model, step):
        keep = config.train.keep_hub_module_max
        if not keep:
            return {"saved_model": None}
        root = os.path.join(config.train.model_dir, SAVED_MODEL_DIRNAME)
        path = os.path.join(root, str(step))
        exporter.export_saved_model(model, config, path, overwrite=True)
        steps = sorted(int(name) for name in os.listdir(root) if name.isdigit())
        for old in steps[:-keep]:
            shutil.rmtree(os.path.join(root, str(old)), ignore_errors=True)
        logging.info("exported the model as a SavedModel to %s", path)
        return {"saved_model": path}
