"""TF-Hub export of tf_simclr models: `python -m hub_export --help`.

`hub_export.exporter.export_saved_model(model, config, export_dir)` writes a
reusable SavedModel (image feature vector) that hub.KerasLayer (tf_keras),
keras.layers.TFSMLayer (Keras 3) and tf.saved_model.load read; see exporter.py.
"""
