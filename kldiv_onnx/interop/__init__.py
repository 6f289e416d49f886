"""Using the loss on real models: embed it into exported graphs, build distillation graphs,
fuse PyTorch's decomposed exports into one node, and validate runtimes against each other."""
