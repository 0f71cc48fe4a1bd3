"""The networks: ResNet encoders (resnet.py), projection and supervised heads (heads.py),
and the SimCLR model that assembles them from a config (simclr.py)."""
