"""Google's released SimCLR checkpoints (v1/v2; TF1, TF2, SavedModel) as tf_simclr model_dirs.

`sources` reads a checkpoint's names and one tensor at a time, `names` sorts the names
into roles, `architecture` detects the ResNet and heads, `mapping` pairs official and
tf_simclr variables, `importer` assigns, verifies and writes the model_dir.
"""
