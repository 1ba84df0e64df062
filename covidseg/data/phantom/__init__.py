"""Synthetic chest-CT phantoms in Hounsfield units, deterministic by seed.

A phantom is a small chest: air outside a body ellipse (muscle ~40 HU, fat ring ~-100 HU),
spine and ribs (~700 HU cortical bone), heart and mediastinum, a CT table, and two lungs
(~-850 HU parenchyma texture) crossed by vessel-like tubes whose partial volume gives them the
same density range as ground-glass.  COVID-like lesions are peripheral / subpleural ground-glass
opacities (-700..-300 HU, faint at high ``difficulty``) with soft irregular borders, sometimes with
a consolidation core (-100..50 HU).  The non-COVID cohort carries solid nodules / tumours instead.

Acquisition is simulated per *centre* (a scanner/site profile): in-plane spacing, slice
thickness (partial-volume averaging of 1 mm sub-slices), reconstruction-kernel blur, noise and a
HU calibration offset.  Labelled and unlabelled cohorts come from different centres, so a model
trained on the labelled ones meets a domain shift, as on real multi-centre data.

Anatomy is scaled to the field of view (``size`` pixels × spacing), so a 64 px phantom is a
miniature chest that still has every structure.  Arrays are (z, y, x) with y pointing posterior
(LPS), so the spine is at the bottom of an axial slice shown with ``origin="upper"``.
"""

from covidseg.data.phantom.anatomy import seeded_rng
from covidseg.data.phantom.cohort import (
    DEMO_LAYOUT,
    PHANTOM_VERSION,
    DemoSpec,
    build_cohort,
    write_phantom,
)
from covidseg.data.phantom.scan import (
    CENTRES,
    COHORT_CENTRES,
    DISPLAY_WINDOW,
    Centre,
    Phantom,
    hu_to_display,
    make_phantom,
)
from covidseg.data.phantom.slices import SLICE_EXPORT_VERSION, export_demo_slices

__all__ = ["CENTRES", "COHORT_CENTRES", "DEMO_LAYOUT", "DISPLAY_WINDOW", "PHANTOM_VERSION",
           "SLICE_EXPORT_VERSION", "Centre", "DemoSpec", "Phantom", "build_cohort",
           "export_demo_slices", "hu_to_display", "make_phantom", "seeded_rng", "write_phantom"]
