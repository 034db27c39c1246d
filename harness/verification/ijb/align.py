"""Aligning a loose face crop to the ArcFace five-point template (OpenCV, an optional extra).

The similarity transform (rotation, uniform scale, translation) that carries the five detected
landmarks onto the template is estimated by least squares over all five points and the crop is
warped with it, black outside the crop, as the published IJB evaluation aligns its faces.
OpenCV's ``estimateAffinePartial2D`` (with every point an inlier, then refined) and
``warpAffine`` do the work: ``pip install 'arcbench[ijb]'``.
"""
from __future__ import annotations

import numpy as np

from ...errors import ArcbenchError

#: ArcFace's five-point template in a 112x112 crop: left eye, right eye, nose tip, mouth corners
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
INSTALL_HINT = "IJB alignment needs OpenCV: pip install 'arcbench[ijb]' (opencv-python-headless)"


def cv2_module():
    """OpenCV, or a one-line error saying what to install."""
    try:
        import cv2
    except ImportError:
        raise ArcbenchError(INSTALL_HINT) from None
    return cv2


def template(size: int = 112) -> np.ndarray:
    """The template for a ``size`` x ``size`` crop (scaled from the 112 one)."""
    return ARCFACE_TEMPLATE * (size / 112.0)


def estimate(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2x3 similarity matrix carrying ``landmarks`` (5, 2) onto the template."""
    cv2 = cv2_module()
    src = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    # a threshold no point can miss makes every landmark an inlier; the refinement then finds the
    # least-squares similarity over all five (what skimage's SimilarityTransform.estimate solves)
    m, _inliers = cv2.estimateAffinePartial2D(src, template(size), method=cv2.RANSAC,
                                              ransacReprojThreshold=1e6, maxIters=1, refineIters=100)
    if m is None:
        raise ValueError("the landmarks do not define a similarity transform")
    return m.astype(np.float64)


def warp(image: np.ndarray, matrix: np.ndarray, size: int = 112) -> np.ndarray:
    """The ``size`` x ``size`` aligned crop of an HWC uint8 image (black outside the crop)."""
    cv2 = cv2_module()
    return cv2.warpAffine(np.ascontiguousarray(image), np.asarray(matrix, dtype=np.float64), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    return warp(image, estimate(landmarks, size), size)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) carried by a 2x3 matrix."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
