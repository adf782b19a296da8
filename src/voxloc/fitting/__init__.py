"""The per-molecule multi-plane maximum-likelihood fit after the network (issue 16):
:mod:`voxloc.fitting.windows` cuts each detection's window out of every camera's raw
pixels, :mod:`voxloc.fitting.mle` fits (x, y, z, photons, background per plane) there."""
