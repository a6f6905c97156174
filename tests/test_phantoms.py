"""benchmarks/phantoms.py: seeded, reproducible nuclei phantoms of the sizes the quality benchmark needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from wnet_zoo.io.voxels import read_voxel_size
from wnet_zoo.segment.evaluate import evaluate

import baselines
import phantoms
import quality


def test_every_setting_is_reproducible_and_sized():
    assert set(phantoms.HELD_OUT) <= set(phantoms.SETTINGS) and len(phantoms.HELD_OUT) == 3
    for name, settings in phantoms.SETTINGS.items():
        image, labels = phantoms.make_phantom(name)
        again_image, again_labels = phantoms.make_phantom(name)
        assert np.array_equal(image, again_image) and np.array_equal(labels, again_labels), name
        assert image.dtype == (np.float32 if settings.floats else np.uint16) and labels.dtype == np.uint16, name
        assert image.shape == labels.shape == settings.shape
        assert 0.2e6 <= image.size <= 1e6, name
        count = int(labels.max())
        assert np.array_equal(np.unique(labels), np.arange(count + 1)), name  # labels 1..N, none missing
        assert 0.8 * settings.count <= count <= settings.count, name
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.min() >= settings.min_voxels, name
        inside, outside = image[labels > 0].mean(), image[labels == 0].mean()
        assert inside > outside, name  # nuclei are brighter than the background on average
    assert phantoms.make_phantom("sparse", seed=123)[0].tolist() != phantoms.make_phantom("sparse")[0].tolist()


def test_tissue_like_settings_are_packed_dim_and_textured():
    """The settings real stacks look like: packed nuclei (a third to a half of the voxels), low contrast against
    a hazy or uneven background, textured nuclei, offset counts and float images."""

    def contrast(name: str, offset: float) -> float:
        image, labels = phantoms.make_phantom(name)
        return float((image[labels > 0].mean() - offset) / (image[labels == 0].mean() - offset))

    for name in ("packed", "tissue", "organoid"):
        labels = phantoms.make_phantom(name)[1]
        assert 0.35 <= (labels > 0).mean() <= 0.5, name
    assert 1.2 <= contrast("low_contrast", 100.0) <= 1.4
    assert 1.2 <= contrast("tissue", 0.0) <= 1.5
    assert 1.2 <= contrast("organoid", 100.0) <= 1.5

    def variation(name: str) -> float:
        image, labels = phantoms.make_phantom(name)
        inside = image[labels > 0].astype(float) - 100.0
        return float(inside.std() / inside.mean())

    assert variation("textured") > 1.2 * variation("sparse")  # chromatin spots and nucleoli, not uniform blobs
    counts = phantoms.make_phantom("confocal_offset")[0]
    assert counts.min() >= 300 and counts.max() <= 4095


def test_script_writes_tiff_pairs_with_their_voxel_size(tmp_path: Path):
    assert phantoms.main([str(tmp_path), "--settings", "anisotropic"]) == 0
    image, labels = phantoms.make_phantom("anisotropic")
    assert np.array_equal(tifffile.imread(tmp_path / "anisotropic.tif"), image)
    assert np.array_equal(tifffile.imread(tmp_path / "anisotropic_labels.tif"), labels)
    voxel = read_voxel_size(tmp_path / "anisotropic.tif")
    assert (voxel.z, voxel.y, voxel.x) == pytest.approx(phantoms.SETTINGS["anisotropic"].voxel_size)


def test_baselines_label_nuclei(capsys: pytest.CaptureFixture[str]):
    image, truth = phantoms.make_phantom("touching")
    results = baselines.run_baselines(image, phantoms.SETTINGS["touching"].voxel_size)
    assert list(results) == ["otsu_cc", "otsu_watershed", "voronoi_otsu"]
    scores = {name: evaluate(labels, truth) for name, labels in results.items()}
    assert all(score.foreground_dice > 0.8 for score in scores.values())
    # touching nuclei merge in connected components; both seeded methods split most of them
    assert scores["otsu_cc"].f1_at_05 < 0.5 < scores["voronoi_otsu"].f1_at_05 < scores["otsu_watershed"].f1_at_05
    assert baselines.main(["--settings", "sparse"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [row.split()[:2] for row in rows[1:4]] == [["sparse", name] for name in results]


def test_quality_keeps_the_settings_it_does_not_run_again_each_dated_with_its_machine(tmp_path: Path):
    import json

    run = {"epochs": None, "threads": None, "train_args": []}
    path = tmp_path / "quality.json"
    amd = {"cpu": "AMD EPYC", "threads": None}
    earlier = {"sparse": {"fg_dice": 1}, "low_snr": {"fg_dice": 2}, "retired": {"fg_dice": 3}}
    path.write_text(json.dumps({"date": "2026-11-25T10:00:00+00:00", "run": run, "machine": amd, "settings": earlier}))
    kept = quality.earlier_settings(path, run, ["low_snr"])
    assert kept == {"sparse": {"date": "2026-11-25T10:00:00+00:00", "machine": amd, "fg_dice": 1}}
    assert quality.earlier_settings(path, {**run, "epochs": 2}, ["low_snr"]) == {}  # other options: not comparable
    assert quality.earlier_settings(tmp_path / "absent.json", run, []) == {}
    now = "2026-11-26T01:00:00+00:00"
    xeon = {"cpu": "Intel Xeon", "threads": 2}
    results = {"date": now, "machine": xeon, "settings": {**kept, "low_snr": {"date": now, "machine": xeon}}}
    assert quality._dates(results) == "sparse on 2026-11-25; low_snr on 2026-11-26"
    assert quality._dates({"date": now, "settings": {"low_snr": {"date": now}}}) == "2026-11-26"
    assert quality._machines(results) == "sparse on AMD EPYC, all thread(s); low_snr on Intel Xeon, 2 thread(s)"
    assert quality._machines({"machine": xeon, "settings": {"low_snr": {}}}) == "Intel Xeon, 2 thread(s)"
    results["settings"]["dense"] = {"date": now, "machine": xeon}  # a setting added to a run names itself alone
    assert quality._machines(results) == "sparse on AMD EPYC, all thread(s); the others on Intel Xeon, 2 thread(s)"
    assert quality._dates(results) == "sparse on 2026-11-25; the others on 2026-11-26"
    assert quality._grouped({"A": ["a", "b"], "B": ["c", "d"]}) == "a, b on A; c, d on B"  # no majority: all named


@pytest.mark.slow
def test_quality_keep_training_exports_and_predicts_again_with_the_earlier_training(tmp_path: Path):
    import json

    out, work = tmp_path / "quality.json", tmp_path / "work"
    tiny = ["--settings", "touching", "--epochs", "1", "--train-arg=--channels=4,8,16,32", "--train-arg=--patch=32"]
    assert quality.main([*tiny, "--work", str(work), "--out", str(out)]) == 0
    first = json.loads(out.read_text())["settings"]["touching"]
    trained = (work / "touching_run" / "best.pt").stat().st_mtime_ns
    predicted = (work / "touching_predictions" / "touching_instances.tif").stat().st_mtime_ns
    assert quality.main([*tiny, "--work", str(work), "--out", str(out), "--keep-training"]) == 0
    again = json.loads(out.read_text())["settings"]["touching"]
    ours, before = again["methods"]["wnet_zoo"], first["methods"]["wnet_zoo"]
    assert ours["training_from"] == first["date"] and ours["stage_seconds"]["train"] == before["stage_seconds"]["train"]
    assert (work / "touching_run" / "best.pt").stat().st_mtime_ns == trained  # not trained again
    assert (work / "touching_predictions" / "touching_instances.tif").stat().st_mtime_ns > predicted
    assert (ours["fg_dice"], ours["mean_f1"]) == (before["fg_dice"], before["mean_f1"])  # same model, same code
    assert "the models were trained earlier: touching on" in quality.render_table(json.loads(out.read_text()))
    with pytest.raises(SystemExit, match="no training run .* for sparse"):
        quality.main(["--settings", "sparse", "--work", str(work), "--out", str(out), "--keep-training"])
