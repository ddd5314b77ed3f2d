"""Training recipes that produce real, offline checkpoints from scikit-learn's bundled digits.

`digits` loads the data (a fixed stratified held-out split; an image view for the ResNet and a
row-sequence view for the LSTM/GRU), `models` builds the networks and `train` trains them and writes a
plain `state_dict` plus a JSON sidecar describing it. `cli` is `ortserve train`.

Nothing heavy is imported here: torch, torchvision and scikit-learn load only with the submodules.
"""
