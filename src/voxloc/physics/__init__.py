"""Physics of the quad-plane microscope, written once: the PSF (Eqs. 4-7), the camera noise
(Eq. 3, ADU -> photons), their bundle with the focal planes and pixel size (Microscope), the
Cramer-Rao bound and the cameras (planes, flips, T_k).

Imports only numpy/scipy and the top-level helpers; no other stage."""
