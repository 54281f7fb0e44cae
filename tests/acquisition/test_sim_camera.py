"""The simulated camera: geometry of the render, exact masks, sensor model, formats and faults.

Geometry tests use a reduced sensor (320 x 256 pixels of 21.2 um: the same field of view as the
default 1280 x 1024 x 5.3 um) to stay fast; the distortion is the default one.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from acquisition.camera import Camera
from acquisition.errors import CameraConfigError, CameraError, CameraLost, CameraTimeout
from acquisition.sim.camera import SimCamera, SimCameraConfig
from acquisition.sim.scene import Scene, SceneConfig
from calibration.transforms import Transform

WORKING_DISTANCE = 0.35


class StandInRobot:
    """The smallest robot the camera needs: a settable TCP pose."""

    def __init__(self, pose=(0.0, -0.45, 0.43, np.pi, 0.0, 0.0)):
        self.pose = np.asarray(pose, dtype=float)

    def tcp_pose(self) -> np.ndarray:
        return self.pose.copy()


def small_camera_config(**kw) -> SimCameraConfig:
    base = dict(width=320, height=256, pixel_size_um=21.2, principal_offset_px=(1.5, -1.0))
    base.update(kw)
    return SimCameraConfig(**base)


def small_scene_config(**defects) -> SceneConfig:
    return SceneConfig(
        sheet_width_m=0.08,
        sheet_height_m=0.06,
        defects={"kinds": ["nut", "washer", "stain", "metal_part"], "margin_mm": 6.0, **defects},
    )


def look_at(camera: SimCamera, robot: StandInRobot, target_base: np.ndarray, tilt_deg=(0.0, 0.0), yaw_deg=0.0,
            distance: float = WORKING_DISTANCE) -> Transform:
    """Put the robot so that the camera looks down at ``target_base`` from ``distance`` (optionally tilted)."""
    rot = Transform.from_rt(np.array([np.pi, 0.0, 0.0]), np.zeros(3))
    tilt = Transform.from_rt(np.deg2rad([tilt_deg[0], tilt_deg[1], yaw_deg]), np.zeros(3))
    R = (rot @ tilt).rotation
    position = np.asarray(target_base, dtype=float) - R[:, 2] * distance
    T_base_cam = Transform.from_rt(R, position)
    robot.pose = (T_base_cam @ camera.T_flange_cam.inverse()).to_pose()
    return T_base_cam


def project(camera: SimCamera, T_base_cam: Transform, points_base: np.ndarray) -> np.ndarray:
    return camera.camera_model.project(T_base_cam.inverse().apply(points_base))


def dot_board(shape=(600, 800), dots=((100, 120), (400, 300), (700, 520), (60, 540), (760, 80)), sigma=3.0):
    """Dark texture with Gaussian bright dots at texel coordinates (u, v)."""
    img = np.full(shape, 10, np.uint8)
    r = int(4 * sigma)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    for du, dv in dots:
        blob = 10 + 230 * np.exp(-(((xx + round(du)) - du) ** 2 + ((yy + round(dv)) - dv) ** 2) / (2 * sigma**2))
        img[round(dv) - r : round(dv) + r + 1, round(du) - r : round(du) + r + 1] = np.round(blob).astype(np.uint8)
    return img, np.asarray(dots, dtype=float)


def blob_centroid(image: np.ndarray, near: np.ndarray, radius: int = 6) -> np.ndarray:
    x0, y0 = int(round(near[0])), int(round(near[1]))
    patch = image[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1].astype(float)
    patch = np.clip(patch - np.median(image), 0, None)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    w = patch.sum()
    return np.array([x0 + (xx * patch).sum() / w, y0 + (yy * patch).sum() / w])


@pytest.fixture
def robot() -> StandInRobot:
    return StandInRobot()


def quiet(**kw) -> SimCameraConfig:
    return small_camera_config(noise={"enabled": False}, vignetting=0.0, **kw)


def test_sim_camera_implements_the_camera_protocol(robot):
    cam = SimCamera(quiet(), robot, Scene(small_scene_config()), seed=0)
    assert isinstance(cam, Camera)
    assert cam.camera_model.width == 320 and cam.camera_model.height == 256
    assert cam.camera_model.fx == pytest.approx(25e-3 / 21.2e-6)
    assert cam.T_flange_cam.translation[2] == pytest.approx(0.08)


@pytest.mark.parametrize("pixel_size_mm, tilt", [(0.25, (0.0, 0.0)), (0.25, (12.0, -8.0)), (0.05, (5.0, 10.0))])
def test_known_board_points_land_at_their_projected_pixels(robot, pixel_size_mm, tilt):
    """A bright dot at a known board position appears where CameraModel.project puts it (< 1 px), with
    distortion, tilted views, and a fine texture that the renderer samples from a pyramid level."""
    scene = Scene(small_scene_config())
    cam = SimCamera(quiet(), robot, scene, seed=0)
    s = pixel_size_mm * 1e-3
    # dots within the ~96 x 77 mm field of view around the board centre
    dots = ((400, 300), (260, 200), (540, 390), (280, 400), (530, 190))
    texture, dots = dot_board(sigma=3.0, dots=dots)
    if pixel_size_mm < 0.1:  # a 0.05 mm texture: 4000 x 3000 texels for the same 0.2 x 0.15 m board
        texture, dots = dot_board(shape=(3000, 4000), sigma=12.0, dots=[(5 * u, 5 * v) for u, v in dots])
    width_m = texture.shape[1] * s
    height_m = texture.shape[0] * s
    # board lying face up: x along base x, y along base -y, z down (OpenCV board frame)
    T_base_board = Transform.from_rt(np.array([np.pi, 0.0, 0.0]), [-width_m / 2, -0.45 + height_m / 2, 0.0])
    scene.set_board(texture, s, T_base_board)
    T_base_cam = look_at(cam, robot, [0.0, -0.45, 0.0], tilt_deg=tilt, yaw_deg=7.0)
    with cam:
        frame = cam.capture()
    # texel centre (u, v) is board point ((u + 0.5) s, (v + 0.5) s, 0)
    board_pts = np.c_[(dots + 0.5) * s, np.zeros(len(dots))]
    expected = project(cam, T_base_cam, T_base_board.apply(board_pts))
    seen = 0
    for px in expected:
        if not (8 <= px[0] < 312 and 8 <= px[1] < 248):
            continue
        found = blob_centroid(frame.pixels, px)
        assert np.linalg.norm(found - px) < 0.25, (found, px)  # the issue asks 1 px; it is ~0.05
        seen += 1
    assert seen == 5


def test_a_point_of_the_part_lands_at_its_projected_pixel(robot):
    """The part frame: a bright dot painted at a known part-frame position shows at its projection."""
    scene = Scene(small_scene_config(), seed=4)
    part = scene.new_part("geo", kind="good")
    cam = SimCamera(quiet(), robot, scene, seed=0)
    xy = np.array([[0.012, -0.009], [-0.025, 0.018], [0.0, 0.0]])
    uv = part.grid.to_texel(xy)
    h, w = part.grid.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w), np.float32)
    for cu, cv in uv:
        img += np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * 6.0**2))
    grey = np.clip(img * 230 + 10, 0, 255).astype(np.uint8)
    part.albedo = np.repeat(grey[..., None], 3, axis=2)
    part._gray = None
    scene.load_part(part)
    centre = part.part_to_base(np.array([[0.0, 0.0]]))[0]
    T_base_cam = look_at(cam, robot, centre + [0.004, -0.003, 0.0], tilt_deg=(6.0, 3.0), yaw_deg=-20.0)
    with cam:
        frame = cam.capture()
    expected = project(cam, T_base_cam, part.part_to_base(xy))
    for px in expected:
        found = blob_centroid(frame.pixels, px, radius=7)
        assert np.linalg.norm(found - px) < 0.25, (found, px)  # the issue asks 1 px; it is ~0.05


def test_the_mask_covers_each_defects_projection(robot):
    scene = Scene(small_scene_config(count=(2, 3)), seed=9)
    part = scene.new_part("m", kind="defective")
    cam = SimCamera(quiet(), robot, scene, seed=0)
    centre = part.part_to_base(np.array([[0.0, 0.0]]))[0]
    T_base_cam = look_at(cam, robot, centre, tilt_deg=(4.0, -3.0), yaw_deg=15.0)
    with cam:
        frame = cam.capture()
    mask = frame.extra["sim_mask"]
    assert mask.dtype == bool and mask.shape == (256, 320)
    assert mask.any() and set(np.unique(mask.view(np.uint8))) == {0, 1}  # real bools, not a view of 0/255
    # independent truth: intersect every pixel's ray with the part plane and look up the label map
    model = cam.camera_model
    v, u = np.mgrid[0:256, 0:320]
    xy = model.undistort_pixels(np.stack([u.ravel(), v.ravel()], -1))
    rays_cam = np.c_[xy, np.ones(len(xy))]
    T_part_cam = part.T_base_part.inverse() @ T_base_cam
    d = rays_cam @ T_part_cam.rotation.T
    lam = -T_part_cam.translation[2] / d[:, 2]
    hit = T_part_cam.translation[:2] + lam[:, None] * d[:, :2]
    tex = np.round(part.grid.to_texel(hit)).astype(int)
    h, w = part.grid.shape
    on = (tex[:, 0] >= 0) & (tex[:, 0] < w) & (tex[:, 1] >= 0) & (tex[:, 1] < h)
    truth = np.zeros(len(xy), bool)
    truth[on] = part.label_map[tex[on, 1], tex[on, 0]] > 0
    truth = truth.reshape(256, 320)
    assert truth.sum() > 50
    assert (truth == mask).mean() > 0.999
    assert (truth & mask).sum() / truth.sum() > 0.98
    # every defect pixel carries its defect's kind: extra["sim_defect_labels"] k = sim_defect_types[k-1]
    kinds, kind_labels = frame.extra["sim_defect_types"], frame.extra["sim_defect_labels"]
    assert kind_labels.dtype == np.uint8 and np.array_equal(kind_labels > 0, mask)
    assert set(np.unique(kind_labels)) == set(range(len(kinds) + 1))
    defect_kind = {d.label: d.kind for d in part.defects}
    truth_label = np.zeros(len(xy), int)
    truth_label[on] = part.label_map[tex[on, 1], tex[on, 0]]
    both = (truth & mask).ravel()
    named = np.array(kinds)[kind_labels.ravel()[both] - 1]
    expected_kinds = np.array([defect_kind[int(k)] for k in truth_label[both]])
    assert (named == expected_kinds).mean() > 0.99
    # and every texel of every defect projects onto (or within a pixel of) the mask
    near_mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    for d in part.defects:
        r0, c0 = d.texel_origin
        vv, uu = np.nonzero(d.mask)
        px = np.round(project(cam, T_base_cam, part.part_to_base(part.grid.to_part(np.stack([uu + c0, vv + r0], -1)))))
        px = px[(px[:, 0] >= 0) & (px[:, 0] < 320) & (px[:, 1] >= 0) & (px[:, 1] < 256)].astype(int)
        assert len(px) > 0 and near_mask[px[:, 1], px[:, 0]].all(), d.kind
    assert sorted({d.kind for d in part.defects}) == frame.extra["sim_defect_types"]
    # the mask holds nothing but the defects: its area matches their projected area (texels -> pixels)
    px_per_m = cam.camera_model.fx / WORKING_DISTANCE
    expected_area = sum(d.mask.sum() for d in part.defects) * (part.texel_size_m * px_per_m) ** 2
    assert mask.sum() == pytest.approx(expected_area, rel=0.15)


def test_good_parts_and_boards_give_empty_masks(robot):
    scene = Scene(small_scene_config(), seed=2)
    part = scene.new_part("g", kind="good")
    cam = SimCamera(small_camera_config(), robot, scene, seed=0)
    look_at(cam, robot, part.part_to_base(np.zeros((1, 2)))[0])
    with cam:
        frame = cam.capture()
        assert not frame.extra["sim_mask"].any() and not frame.extra["sim_defect_labels"].any()
        assert frame.extra["sim_defect_types"] == [] and frame.extra["sim_defect_type"] == "good"
        assert frame.extra["sim_part_id"] == "g" and frame.extra["sim_part_defective"] is False
        scene.set_board(np.full((100, 100), 255, np.uint8), 1e-3, Transform.identity())
        frame = cam.capture()
        assert not frame.extra["sim_mask"].any() and frame.extra["sim_part_id"] is None


def test_same_seeds_give_identical_frames_and_other_parts_differ(robot):
    def frame_of(part_id: str, cam_seed: int) -> np.ndarray:
        scene = Scene(small_scene_config(), seed=1)
        part = scene.new_part(part_id, kind="good")
        cam = SimCamera(small_camera_config(), robot, scene, seed=cam_seed)
        look_at(cam, robot, part.part_to_base(np.zeros((1, 2)))[0])
        with cam:
            return cam.capture().pixels

    a = frame_of("A", 0)
    assert np.array_equal(a, frame_of("A", 0))
    assert not np.array_equal(a, frame_of("B", 0))
    other_noise = frame_of("A", 1)
    assert not np.array_equal(a, other_noise)
    assert np.abs(a.astype(int) - other_noise.astype(int)).mean() < 4  # only the noise differs


def test_exposure_and_gain_scale_intensity_and_clip(robot):
    scene = Scene(small_scene_config())
    scene.set_board(np.full((400, 400), 100, np.uint8), 0.5e-3, Transform.from_rt(np.array([np.pi, 0, 0]), [-0.1, -0.35, 0]))
    cam = SimCamera(quiet(exposure_us=2000.0, reference_exposure_us=4000.0), robot, scene, seed=0)
    look_at(cam, robot, [0.0, -0.45, 0.0])
    with cam:
        base = cam.capture().pixels.astype(float)
        assert base.mean() == pytest.approx(50.0, abs=1.0)
        cam.configure(exposure_us=4000.0)
        assert cam.capture().pixels.mean() == pytest.approx(2 * base.mean(), rel=0.02)
        cam.configure(exposure_us=2000.0, gain_db=20 * np.log10(3.0))
        tripled = cam.capture()
        assert tripled.pixels.mean() == pytest.approx(3 * base.mean(), rel=0.02)
        assert tripled.gain_db == pytest.approx(9.542, abs=1e-3) and tripled.exposure_us == 2000.0
        cam.configure(exposure_us=40000.0, gain_db=0.0)
        clipped = cam.capture().pixels
        assert clipped.dtype == np.uint8 and (clipped == 255).all()


def test_noise_follows_shot_and_read_noise(robot):
    scene = Scene(small_scene_config())
    scene.set_board(np.full((400, 400), 128, np.uint8), 0.5e-3, Transform.from_rt(np.array([np.pi, 0, 0]), [-0.1, -0.35, 0]))
    cfg = small_camera_config(vignetting=0.0, noise={"full_well_e": 2000.0, "read_noise_e": 10.0})
    cam = SimCamera(cfg, robot, scene, seed=3)
    look_at(cam, robot, [0.0, -0.45, 0.0])
    with cam:
        a = cam.capture().pixels.astype(float)
        b = cam.capture().pixels.astype(float)
    k = 255.0 / 2000.0
    expected_std = np.sqrt(k * 128.0 + (10.0 * k) ** 2)
    assert (a - b).std() / np.sqrt(2) == pytest.approx(expected_std, rel=0.1)
    assert a.mean() == pytest.approx(128.0, abs=0.5)


@pytest.mark.parametrize("fmt, shape", [("Mono8", (256, 320)), ("RGB8", (256, 320, 3)), ("BayerRG8", (256, 320, 3))])
def test_pixel_formats_and_colours(robot, fmt, shape):
    scene = Scene(small_scene_config())
    red = np.zeros((400, 400, 3), np.uint8)
    red[..., 0] = 200
    red[..., 2] = 40
    scene.set_board(red, 0.5e-3, Transform.from_rt(np.array([np.pi, 0, 0]), [-0.1, -0.35, 0]))
    cam = SimCamera(quiet(pixel_format=fmt), robot, scene, seed=0)
    look_at(cam, robot, [0.0, -0.45, 0.0])
    with cam:
        frame = cam.capture()
    assert frame.pixels.shape == shape and frame.pixels.dtype == np.uint8 and frame.pixel_format == fmt
    if fmt == "Mono8":
        assert frame.pixels.mean() == pytest.approx(0.299 * 200 + 0.114 * 40, abs=1.5)
    else:
        centre = frame.pixels[20:-20, 20:-20].reshape(-1, 3).mean(axis=0)
        assert centre == pytest.approx([200, 0, 40], abs=2.0)


def test_roi_renders_the_same_pixels_as_the_full_frame(robot):
    scene = Scene(small_scene_config(), seed=0)
    part = scene.new_part("r", kind="defective")
    cam = SimCamera(quiet(), robot, scene, seed=0)
    look_at(cam, robot, part.part_to_base(np.zeros((1, 2)))[0])
    with cam:
        full = cam.capture()
        cam.configure(roi=(40, 30, 200, 150))
        part_frame = cam.capture()
    assert part_frame.pixels.shape == (150, 200)
    assert np.array_equal(part_frame.pixels, full.pixels[30:180, 40:240])
    assert np.array_equal(part_frame.extra["sim_mask"], full.extra["sim_mask"][30:180, 40:240])


def test_injected_faults_and_closed_camera(robot):
    scene = Scene(small_scene_config())
    cam = SimCamera(small_camera_config(), robot, scene, seed=0)
    with pytest.raises(CameraError, match="not open"):
        cam.capture()
    with cam:
        cam.capture()
        cam.inject_fault(timeout_on_capture=2)
        cam.capture()
        with pytest.raises(CameraTimeout, match="sim-cam-0"):
            cam.capture()
        assert cam.capture().frame_id == 3  # a timeout is transient
        cam.inject_fault(lost_on_capture=1)
        with pytest.raises(CameraLost):
            cam.capture()
        with pytest.raises(CameraLost):
            cam.capture()  # stays lost ...
    with cam:  # ... until reopened
        assert cam.capture().pixels.shape == (256, 320)


def test_faults_from_the_configuration_count_captures_from_the_start(robot):
    cam = SimCamera(small_camera_config(faults={"timeout_on_capture": 1}), robot, Scene(small_scene_config()), seed=0)
    with cam:
        with pytest.raises(CameraTimeout):
            cam.capture()
        cam.capture()


def test_bad_settings_are_refused_and_change_nothing(robot):
    cam = SimCamera(small_camera_config(), robot, Scene(small_scene_config()), seed=0)
    with pytest.raises(CameraConfigError, match="exposure_us"):
        cam.configure(exposure_us=-5.0, gain_db=3.0)
    assert cam.gain_db == 0.0
    with pytest.raises(CameraConfigError, match="gain_db"):
        cam.configure(gain_db=60.0)
    with pytest.raises(CameraConfigError, match="Mono16"):
        cam.configure(pixel_format="Mono16")
    with pytest.raises(CameraConfigError, match="roi"):
        cam.configure(roi=(300, 0, 100, 100))
    cam.configure(roi=(1, 1, 100, 100))
    with pytest.raises(CameraConfigError, match="BayerRG8 needs even"):
        cam.configure(pixel_format="BayerRG8")
    assert cam.pixel_format == "Mono8" and cam.roi == (1, 1, 100, 100)
    with pytest.raises(ValueError, match="pixel_format"):
        SimCameraConfig(pixel_format="YUV")
    with pytest.raises(ValueError, match="extra"):
        SimCameraConfig(focal_lenght_mm=25)


def test_renders_at_the_pose_of_the_simulated_robot():
    from acquisition.sim.robot import SimRobot

    scene = Scene(small_scene_config(), seed=0)
    part = scene.new_part("sr", kind="defective")
    robot = SimRobot()
    cam = SimCamera(small_camera_config(), robot, scene, seed=0)
    target = part.part_to_base(np.array([list(part.defects[0].center_m)]))[0]
    stand_in = StandInRobot()
    look_at(cam, stand_in, target)
    with robot, cam:
        robot.move_linear(stand_in.pose, speed=0.25, accel=1.0)
        frame = cam.capture()
        T_base_cam = Transform.from_pose(robot.tcp_pose()) @ cam.T_flange_cam
    assert np.allclose(frame.extra["sim_T_base_cam"], T_base_cam.to_pose())
    assert np.allclose(T_base_cam.translation, target + [0, 0, WORKING_DISTANCE], atol=1e-4)
    assert frame.extra["sim_mask"].any() and part.defects[0].kind in frame.extra["sim_defect_types"]
    assert frame.device_timestamp_ns == int(round(robot.clock.now() * 1e9))


def test_rays_that_miss_the_table_see_the_background(robot):
    """A camera tilted to the horizon above a large board: rays above the horizon never meet the plane and
    show the table colour (the renderer must not fold them back onto the board behind the camera)."""
    scene = Scene(small_scene_config(), seed=0)
    cam = SimCamera(quiet(), robot, scene, seed=0)
    T_base_cam = look_at(cam, robot, [0.0, -0.45, 0.0], tilt_deg=(88.0, 0.0), distance=0.3)
    below = T_base_cam.translation
    scene.set_board(np.full((2000, 2000), 250, np.uint8), 1e-3,
                    Transform.from_rt(np.array([np.pi, 0, 0]), [below[0] - 1.0, below[1] + 1.0, 0.0]))
    with cam:
        image = cam.capture().pixels
    table = round(255 * (0.14 * 0.299 + 0.14 * 0.587 + 0.15 * 0.114))
    rows = image.mean(axis=1)
    sky, ground = (rows[0], rows[-1]) if rows[0] < rows[-1] else (rows[-1], rows[0])
    assert abs(sky - table) < 1.0  # above the horizon: the background, not the board behind the camera
    assert ground > 240  # below it, near the camera: the board


def test_a_charuco_board_is_detected_at_its_true_corners(robot):
    """The calibration use: a printed ChArUco board (0.05 mm per texel, with a white margin) rendered
    through the distorted camera is detected by OpenCV with corners at their true projections (sub-pixel)."""
    dictionary = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_5X5_100)
    square, marker, pps = 0.010, 0.0075, 200
    board = cv2.aruco.CharucoBoard((7, 5), square, marker, dictionary)
    image = board.generateImage((7 * pps, 5 * pps), marginSize=0, borderBits=1)
    margin = pps // 2
    image = cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=255)
    scene = Scene(small_scene_config())
    T_base_board = Transform.from_rt(np.array([np.pi, 0, 0.2]), [-0.035, -0.45 + 0.025, 0.0])
    scene.set_board(image, square / pps, T_base_board, origin_px=(margin, margin))
    cam = SimCamera(small_camera_config(width=640, height=512, pixel_size_um=10.6), robot, scene, seed=0)
    T_base_cam = look_at(cam, robot, [0.0, -0.45, 0.0], tilt_deg=(12.0, -8.0), yaw_deg=5.0)
    with cam:
        frame = cam.capture()
    corners, ids, _, _ = cv2.aruco.CharucoDetector(board).detectBoard(frame.pixels)
    assert ids is not None and len(ids) == board.getChessboardCorners().shape[0]
    truth = project(cam, T_base_cam, T_base_board.apply(board.getChessboardCorners()[ids.ravel()]))
    err = np.linalg.norm(corners.reshape(-1, 2) - truth, axis=1)
    assert err.mean() < 0.15 and err.max() < 0.4, (err.mean(), err.max())


def test_a_grey_board_seen_in_colour_has_equal_channels(robot):
    scene = Scene(small_scene_config())
    scene.set_board(np.full((400, 400), 180, np.uint8), 0.5e-3, Transform.from_rt(np.array([np.pi, 0, 0]), [-0.1, -0.35, 0]))
    cam = SimCamera(quiet(pixel_format="RGB8"), robot, scene, seed=0)
    look_at(cam, robot, [0.0, -0.45, 0.0])
    with cam:
        pixels = cam.capture().pixels
    assert pixels.shape == (256, 320, 3) and (pixels == 180).all()
