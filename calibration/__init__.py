"""The geometry of the cell: poses and transforms, the camera model, ChArUco boards, intrinsic and
hand-eye calibration, plane homographies. Imports nothing of this project's other packages."""
from calibration.camera_model import CameraModel
from calibration.errors import CalibrationError
from calibration.transforms import Transform

__all__ = ["CameraModel", "CalibrationError", "Transform"]
