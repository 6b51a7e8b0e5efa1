"""The synthetic demo scene: deterministic, well-formed, and thermal/RGB behave like the real thing."""

import numpy as np
import pytest

from mex_fusion_ros.bag.scene import SCENE_CLASSES, DemoScene, SceneConfig

SMALL = SceneConfig(width=96, height=72, num_frames=40, seed=3)


def test_same_seed_same_frames_other_seed_other_frames():
    first, second = DemoScene(SMALL), DemoScene(SMALL)
    for index in (0, 17, 39):
        a, b = first.render(index), second.render(index)
        np.testing.assert_array_equal(a.ir, b.ir)
        np.testing.assert_array_equal(a.vi, b.vi)
        assert a.objects == b.objects
    other = DemoScene(SceneConfig(width=96, height=72, num_frames=40, seed=4)).render(0)
    assert not np.array_equal(other.vi, first.render(0).vi)


def test_frames_follow_the_image_conventions():
    scene = DemoScene(SMALL)
    frames = list(scene)
    assert len(frames) == len(scene) == SMALL.num_frames
    for frame in frames[::7]:
        assert frame.ir.shape == (72, 96) and frame.ir.dtype == np.float32
        assert frame.vi.shape == (72, 96, 3) and frame.vi.dtype == np.float32
        for image in (frame.ir, frame.vi):
            assert image.min() >= 0.0 and image.max() <= 1.0
        for obj in frame.objects:
            assert obj.label in SCENE_CLASSES
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 < 96 and 0 <= y0 < y1 < 72


def test_objects_move_and_are_warm_in_thermal():
    scene = DemoScene(SceneConfig(width=160, height=128, num_frames=30, seed=0))
    first, later = scene.render(0), scene.render(15)
    assert [o.box for o in first.objects] != [o.box for o in later.objects]
    people = [o for o in first.objects if o.label == "person"]
    assert people, "the default scene has pedestrians in view at frame 0"
    for person in people:
        x0, y0, x1, y1 = person.box
        # The hottest pixel of a person is well above the scene's median temperature.
        assert first.ir[y0 : y1 + 1, x0 : x1 + 1].max() > np.median(first.ir) + 0.3


def test_day_to_dusk_darkens_rgb_but_not_thermal():
    scene = DemoScene(SMALL)
    day, dusk = scene.render(0), scene.render(SMALL.num_frames - 1)
    assert day.dusk == 0.0 and dusk.dusk == 1.0
    assert dusk.vi.mean() < 0.6 * day.vi.mean()
    assert abs(dusk.ir.mean() - day.ir.mean()) < 0.05


@pytest.mark.parametrize("kwargs", [dict(width=10), dict(num_frames=0), dict(fps=0.0), dict(num_vehicles=-1)])
def test_bad_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):
        SceneConfig(**kwargs)


def test_negative_frame_index_is_refused():
    with pytest.raises(ValueError, match="frame index"):
        DemoScene(SMALL).render(-1)


def test_demo_falls_back_to_the_classical_restorer_only_without_weights(monkeypatch):
    from mex_fusion_ros import demo_command

    monkeypatch.setattr(demo_command, "network_available", lambda spec="nano": (False, "no weights file"))
    methods, notice = demo_command.choose_methods(None)
    assert methods == ["cascade", "laplacian"] and "no weights file" in notice and "NOTICE" in notice
    monkeypatch.setattr(demo_command, "network_available", lambda spec="nano": (True, ""))
    assert demo_command.choose_methods(None) == (["nano", "laplacian"], None)
    assert demo_command.choose_methods(["gff"]) == (["gff"], None)


def test_demo_command_end_to_end_on_a_tiny_scene(tmp_path, capsys):
    from mex_fusion_ros import cli

    out = tmp_path / "demo"
    assert cli.main(["demo", "--frames", "20", "--size", "64", "48", "--method", "laplacian", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {(out / 'report' / 'report.html').resolve()}" in printed
    assert (out / "bag" / "degradation_timeline.json").is_file()
    assert "pairs processed" in (out / "report" / "report.html").read_text()
    with pytest.raises(SystemExit, match="already holds a demo run"):
        cli.main(["demo", "--frames", "20", "--method", "laplacian", "--out", str(out)])
