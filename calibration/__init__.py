"""The geometry of the cell: poses and transforms, the camera model, ChArUco boards, intrinsic and
hand-eye calibration, plane homographies. Imports nothing of this project's other packages."""
from calibration.calibration_file import CalibrationFile, load_calibration, save_calibration
from calibration.camera_model import CameraModel
from calibration.charuco import BoardDetection, CharucoBoardSpec, CharucoDetector
from calibration.errors import CalibrationError
from calibration.transforms import Transform

__all__ = [
    "BoardDetection",
    "CalibrationError",
    "CalibrationFile",
    "CameraModel",
    "CharucoBoardSpec",
    "CharucoDetector",
    "Transform",
    "load_calibration",
    "save_calibration",
]
