"""fiberprep: labelled training datasets from fiber end-face microscope images.

Pure functions on numpy arrays and pandas tables, one module per concern:
``io`` (reading inputs, ids, atomic writes), ``synth`` (images with exact ground
truth), ``zones`` (fiber geometry, IEC 61300-3-35 zones), ``defects`` (DO2MR /
LEI detection), ``features``, ``clustering``, ``grading`` (severity, pass/fail),
``datasets``, ``library`` and ``report``.
"""

__version__ = "0.1.0"
