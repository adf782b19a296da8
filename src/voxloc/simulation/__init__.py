"""Simulation of training frames (Sect. 3, Table 3): the settings bundle, the simulator, the
HDF5 shards (the only code that knows their layout) and the demo "true microscope".

Imports physics (and calibration files) and the top-level helpers."""
