"""Stage 2, features: CNN backbones, extraction into the HDF5 features file, the file itself, the
reuse-or-extract cache, and the CNN rebuilt for new images.
"""
