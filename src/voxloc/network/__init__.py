"""The voxel-wise regression network (Sect. 2.3-2.4): model, int8 quantization, loss,
training batches, training, validation and training curves.

torch is imported by the modules that need it, never by this file; imports physics,
simulation and the top-level helpers."""
