"""The fuser interface shared by the network, the classical baselines, the nodes and evaluation."""
