"""The contract layer: what backbones, tasks and the engine all build on, importing nothing else
of the project (the registries, metrics and their specs, the training budget, dataset resolution,
measurement and batching primitives)."""
