import numpy as np
import pytest

from covidseg.data.phantom import (
    CENTRES,
    DemoSpec,
    build_cohort,
    hu_to_display,
    make_phantom,
)


def test_deterministic_by_seed():
    a = make_phantom(7, size=64, depth_mm=16)
    b = make_phantom(7, size=64, depth_mm=16)
    c = make_phantom(8, size=64, depth_mm=16)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.infection, b.infection)
    assert a.spacing == b.spacing
    assert not np.array_equal(a.image, c.image) or a.spacing != c.spacing


def test_anatomy_in_hounsfield_units():
    ph = make_phantom(3, size=96, depth_mm=24, centre="A", difficulty=0.3)
    img, lung, inf = ph.image, ph.lung > 0, ph.infection > 0
    assert img.dtype == np.float32 and img.ndim == 3
    assert set(np.unique(ph.lung)) <= {0, 1} and set(np.unique(ph.infection)) <= {0, 1}
    parenchyma = lung & ~inf
    assert -900 < np.median(img[parenchyma]) < -750  # lung ~ -850 HU
    assert img.max() > 500  # bone
    assert np.median(img[:, :3, :]) < -900  # air at the edge of the field of view
    assert inf.any() and (inf <= lung).all()  # lesions lie inside the lungs
    assert -800 < np.median(img[inf]) < 60  # ground-glass / consolidation range
    sx, sy, sz = ph.spacing
    assert 0.6 <= sx <= 0.9 and sx == sy and 1.0 <= sz <= 8.0


def test_difficulty_makes_ground_glass_fainter():
    def contrast(d):
        vals = []
        for s in range(4):
            ph = make_phantom(20 + s, size=64, depth_mm=24, centre="A", difficulty=d)
            lung, inf = ph.lung > 0, ph.infection > 0
            vals.append(np.median(ph.image[inf]) - np.median(ph.image[lung & ~inf]))
        return np.mean(vals)

    assert contrast(0.0) > contrast(1.0) + 50


def test_centres_differ_in_noise_and_thickness():
    a = [make_phantom(s, size=64, depth_mm=24, centre="A") for s in range(3)]
    c = [make_phantom(s, size=64, depth_mm=24, centre="C") for s in range(3)]
    air_sd = lambda p: p.image[:, :4, :].std()  # noqa: E731
    assert np.mean([air_sd(p) for p in c]) > np.mean([air_sd(p) for p in a])
    assert max(p.thickness for p in a) <= max(CENTRES["A"].thickness_mm)
    assert min(p.thickness for p in c) >= min(CENTRES["C"].thickness_mm)


def test_noncovid_and_display_values():
    ph = make_phantom(5, size=64, depth_mm=24, kind="noncovid")
    assert ph.infection.any() and np.median(ph.image[ph.infection > 0]) > -300  # solid nodules
    disp = make_phantom(5, size=64, depth_mm=24, hu=False)
    assert disp.image.min() >= 0 and disp.image.max() <= 255
    assert np.allclose(hu_to_display(np.array([-1250.0, 250.0])), [0, 255])


def test_build_cohort_layout(tmp_path):
    spec = DemoSpec(labelled=2, unlabelled=1, noncovid=1, size=48, depth_mm=12)
    root = build_cohort(tmp_path / "demo", spec)
    assert sorted(p.name for p in (root / "covid" / "images").iterdir()) == ["covid_000.nii.gz",
                                                                             "covid_001.nii.gz"]
    assert (root / "covid" / "infection" / "covid_000.nii.gz").exists()
    assert (root / "unlabelled" / "images" / "unlab_000.nii.gz").exists()
    assert not (root / "unlabelled" / "infection").exists()
    assert (root / "noncovid" / "masks" / "nodule_000.nii.gz").exists()
    before = (root / "cohort.json").stat().st_mtime
    build_cohort(root, spec)  # cached: not rebuilt
    assert (root / "cohort.json").stat().st_mtime == before


@pytest.mark.parametrize("kind", ["covid", "noncovid", "healthy"])
def test_kinds(kind):
    ph = make_phantom(1, size=48, depth_mm=12, kind=kind)
    assert ph.infection.any() == (kind != "healthy")
