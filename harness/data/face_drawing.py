"""The drawing layers of one synthetic face, painted onto a pose-aware canvas.

Nothing here takes random numbers: :mod:`arcbench.data.synth_face` draws the
identity and the shot, and these layers only turn those numbers into shapes,
back to front.  Shapes are drawn at :data:`SUPERSAMPLE` times the final size
and box-downsampled afterwards (anti-aliasing).
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Tuple

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 96, 112  # final image size, as the reference's aligned crops
SUPERSAMPLE = 2  # draw at 2x, then box-downsample (anti-aliasing)


def _col(c, a=255) -> Tuple[int, int, int, int]:
    c = np.clip(np.asarray(c, dtype=float), 0, 255)
    return int(c[0]), int(c[1]), int(c[2]), int(a)


def _face_outline(p, dx: float, n_pts: int = 72) -> List[Tuple[float, float]]:
    cx, cy, a, b, n = p["face_cx"] + dx, p["face_cy"], p["face_a"], p["face_b"], p["round_n"]
    pts = []
    for i in range(n_pts):
        t = 2 * math.pi * i / n_pts
        c, s = math.cos(t), math.sin(t)
        x = math.copysign(abs(c) ** (2 / n), c)
        y = math.copysign(abs(s) ** (2 / n), s)
        if y > 0:  # narrow towards the chin
            x *= 1 - (1 - p["taper"]) * y ** 1.5
        pts.append((cx + a * x, cy + b * y))
    return pts


class Canvas:
    """ImageDraw at supersampled scale with the pose (rotation, scale, shift) folded into
    the coordinates, so shapes are drawn once and never resampled."""

    def __init__(self, img: Image.Image, ang: float, sc: float, tx: float, ty: float, ox: float, oy: float):
        self.d = ImageDraw.Draw(img)
        S = SUPERSAMPLE
        c, s = math.cos(ang) * sc * S, math.sin(ang) * sc * S
        self.m = (c, -s, (ox + tx) * S - c * ox + s * oy, s, c, (oy + ty) * S - s * ox - c * oy)
        self.lw = sc * S

    def pts(self, xy):
        a, b, c, d, e, f = self.m
        return [(a * x + b * y + c, d * x + e * y + f) for x, y in xy]

    def poly(self, xy, fill, outline=None):
        self.d.polygon(self.pts(xy), fill=fill, outline=outline)

    def ellipse_pts(self, cx, cy, rx, ry, n=20):
        return [(cx + rx * math.cos(2 * math.pi * i / n), cy + ry * math.sin(2 * math.pi * i / n)) for i in range(n)]

    def ell(self, cx, cy, rx, ry, fill=None, outline=None, width=1.0):
        xy = self.ellipse_pts(cx, cy, rx, ry, 24 if max(rx, ry) > 4 else 12)
        if fill is not None:
            self.poly(xy, fill)
        if outline is not None:
            self.line(xy + xy[:1], outline, width)

    def rect(self, x0, y0, x1, y1, fill=None, outline=None, width=1.0):
        xy = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        if fill is not None:
            self.poly(xy, fill)
        if outline is not None:
            self.line(xy + xy[:1], outline, width)

    def line(self, xy, fill, width):
        self.d.line(self.pts(xy), fill=fill, width=max(1, int(round(width * self.lw))), joint="curve")


class Shot(NamedTuple):
    """What differs between two pictures of one person: pose and expression."""

    ang: float
    sc: float
    tx: float
    ty: float
    yaw: float
    smile: float
    eye_open: float
    brow_up: float
    gaze: float


class FaceLayers:
    """The drawing layers of one face, painted back to front by :meth:`draw`; none takes randomness."""

    def __init__(self, cv: Canvas, p: dict, shot: Shot):
        self.cv, self.p, self.shot = cv, p, shot
        yaw = shot.yaw
        self.outline = _face_outline(p, yaw * 0.35)
        self.cx, self.a = p["face_cx"] + yaw * 0.35, p["face_a"]
        self.fx = p["face_cx"] + yaw  # features move more than the outline: a cheap yaw
        self.ey = p["eye_y"]

    def draw(self) -> None:
        for layer in (self.back_hair, self.skin, self.beard, self.head_hair, self.eyes_and_brows,
                      self.nose, self.mouth, self.mole, self.glasses):
            layer()

    def back_hair(self) -> None:
        """Volume and long/curly styles, behind the head."""
        p, cv, cx, a = self.p, self.cv, self.cx, self.a
        hair, style = p["hair"], p["hair_style"]
        if style in (1, 5):
            grow = 14 if style == 5 else 4
            cv.ell(cx, p["face_cy"] - 6, a + grow + p["hair_vol"], p["face_b"] + grow * 0.6, _col(hair))
            if style == 1:
                cv.rect(cx - a - 6, p["face_cy"] - 10, cx + a + 6, p["face_cy"] + 44, fill=_col(hair))
        elif style != 4:
            top = p["face_cy"] - p["face_b"]
            cv.ell(cx, top + p["face_b"] * 0.55, a + 2 + p["hair_vol"] * 0.5, p["face_b"] * 0.55 + p["hair_vol"],
                   _col(hair))

    def skin(self) -> None:
        """Neck, ears, the face itself, and blush."""
        p, cv, cx, a, yaw = self.p, self.cv, self.cx, self.a, self.shot.yaw
        skin = p["skin"]
        cv.rect(cx - a * 0.45, p["face_cy"] + 20, cx + a * 0.45, HEIGHT + 30, fill=_col(skin * 0.82))
        for side in (-1, 1):
            ex = cx + side * (a - 1.5) + yaw * 0.3 * side
            cv.ell(ex, p["ear_y"], p["ear_w"] * (1 - 0.08 * side * yaw / 4.5), p["ear_h"], _col(skin * 0.9))
        cv.poly(self.outline, _col(skin))
        if p["blush"]:
            for side in (-1, 1):
                cv.ell(self.fx + side * (p["eye_dx"] + 2), p["nose_y"] + 2, 6, 4,
                       _col(skin * 0.72 + np.array([230, 90, 90]) * 0.28))

    def beard(self) -> None:
        p, fx = self.p, self.fx
        if not p["beard"]:
            return
        bc = _col(p["hair"] * 0.9)
        my, mw = p["mouth_y"], p["mouth_w"]
        if p["beard"] in (1, 3):  # moustache
            self.cv.poly([(fx - mw * 0.55, my - 1), (fx, my - 6), (fx + mw * 0.55, my - 1), (fx, my - 3)], bc)
        if p["beard"] in (2, 3):  # chin beard following the jaw
            jaw = sorted(((x, y) for x, y in self.outline if y > my - 6), key=lambda q: q[0])
            self.cv.poly(jaw + [(fx + mw * 0.6, my + 3), (fx - mw * 0.6, my + 3)], bc)

    def head_hair(self) -> None:
        """The outline above the hairline, closed by a (styled) edge."""
        p, fx, cx = self.p, self.fx, self.cx
        style = p["hair_style"]
        if style == 4 and p["hairline"] <= 6:
            return
        hl = p["hairline"] + (p["face_cy"] - 60) * 0.5
        arc = sorted(((x, y) for x, y in self.outline if y < hl), key=lambda q: q[0])
        if len(arc) < 3:
            return
        grow = 1.5 + (p["hair_vol"] * 0.3 if style != 4 else 0)
        arc = [(x + math.copysign(grow, x - cx), y - grow) for x, y in arc]
        x0, x1 = arc[-1][0], arc[0][0]
        if style == 2:  # bangs: jagged fringe down to the brows
            fy = p["eye_y"] - p["brow_dy"] - 4
            edge = [(x0 + (x1 - x0) * i / 7, fy - (3 if i % 2 else 0)) for i in range(8)]
        elif style == 3:  # side part: slanted edge
            edge = [(x0, hl + 6 + p["part"] * 0.4), (fx + p["part"], hl - 2), (x1, hl + 6 - p["part"] * 0.4)]
        else:
            edge = [(x0, hl + 3), (fx, hl - 1.5), (x1, hl + 3)]
        self.cv.poly(arc + edge, _col(p["hair"]))

    def eyes_and_brows(self) -> None:
        # one side at a time (eye, then its brow), the order the layers overlap in
        for side in (-1, 1):
            ex = self.fx + side * self.p["eye_dx"]
            self._eye(side, ex)
            self._brow(side, ex)

    def _eye(self, side: int, ex: float) -> None:
        p, cv, yaw, ey = self.p, self.cv, self.shot.yaw, self.ey
        eh = p["eye_w"] * p["eye_h"] * 0.5 * self.shot.eye_open
        ew = p["eye_w"] * 0.5 * (1 - 0.06 * side * yaw / 4.5)
        tilt = math.radians(p["eye_tilt"]) * side
        ct, st = math.cos(tilt), math.sin(tilt)
        pts = []
        for i in range(16):
            q = 2 * math.pi * i / 16
            x, y = ew * math.cos(q), eh * math.sin(q) * (1.15 if math.sin(q) < 0 else 0.85)
            pts.append((ex + x * ct - y * st, ey + x * st + y * ct))
        cv.poly(pts, _col((235, 232, 225)), outline=_col(p["skin"] * 0.35))
        ir = max(1.0, p["eye_w"] * p["iris_r"] * 0.8)
        ir_y = min(ir, eh + 0.6)
        gaze = self.shot.gaze
        cv.ell(ex + gaze, ey, ir, ir_y, _col(p["iris"]))
        cv.ell(ex + gaze, ey, ir * 0.45, min(ir * 0.45, ir_y), _col((12, 10, 10)))

    def _brow(self, side: int, ex: float) -> None:
        p = self.p
        by = self.ey - p["brow_dy"] - self.shot.brow_up
        bl = p["eye_w"] * p["brow_len"] * 0.5
        bt = math.radians(p["brow_tilt"]) * side
        cb, sb = math.cos(bt), math.sin(bt)
        bc = _col(p["hair"] * (1 - p["brow_dark"]) + np.array([25, 20, 18]) * p["brow_dark"])
        bpts = []
        for i in range(7):
            s = -1 + 2 * i / 6
            x, y = s * bl, -p["brow_arch"] * (1 - s * s)
            bpts.append((ex + x * cb - y * sb, by + x * sb + y * cb))
        self.cv.line(bpts, bc, p["brow_th"])

    def nose(self) -> None:
        p, cv, ey = self.p, self.cv, self.ey
        ny, nw, skin = p["nose_y"], p["nose_w"], p["skin"]
        nc = _col(skin * p["nose_dark"])
        nx = self.fx + self.shot.yaw * 0.4
        if p["nose_style"] == 0:
            cv.line([(nx - 1, ey + 5), (nx - nw * 0.25, ny - 2), (nx - nw * 0.45, ny), (nx, ny + 1.5),
                     (nx + nw * 0.45, ny)], nc, 1.3)
        elif p["nose_style"] == 1:
            cv.poly([(nx, ey + 6), (nx - nw * 0.5, ny + 1), (nx + nw * 0.5, ny + 1)], _col(skin * 0.92))
            cv.ell(nx - nw * 0.25, ny, 1.6, 1.1, nc)
            cv.ell(nx + nw * 0.25, ny, 1.6, 1.1, nc)
        else:
            cv.ell(nx, ny - 1, nw * 0.4, 3, _col(skin * 0.9))
            cv.ell(nx - nw * 0.3, ny + 0.5, 1.8, 1.2, nc)
            cv.ell(nx + nw * 0.3, ny + 0.5, 1.8, 1.2, nc)

    def mouth(self) -> None:
        """Upper and lower lip as curves, and the line between them."""
        p, smile = self.p, self.shot.smile
        my, mw = p["mouth_y"], p["mouth_w"] * 0.5
        lip = _col(p["skin"] * (1 - p["lip_mix"]) + np.array([175, 60, 70]) * p["lip_mix"])
        mx = self.fx + self.shot.yaw * 0.5
        ss = [-1 + 2 * i / 12 for i in range(13)]
        mid = [(mx + s * mw, my - smile * s * s + smile * 0.4) for s in ss]
        top_c = [(x, y - p["lip_th"] * 0.5 * (1 - s * s)) for (x, y), s in zip(mid, ss)]
        bot_c = [(x, y + p["lip_th"] * (1 - s * s)) for (x, y), s in zip(mid, ss)]
        self.cv.poly(top_c + bot_c[::-1], lip)
        self.cv.line(mid, _col(p["skin"] * 0.3), 0.9)

    def mole(self) -> None:
        p = self.p
        if p["mole"]:
            self.cv.ell(self.fx + p["mole_x"] * self.a * 0.8, p["face_cy"] + p["mole_y"] * p["face_b"] * 0.5,
                        p["mole_r"], p["mole_r"], _col((60, 38, 28)))

    def glasses(self) -> None:
        p, cv, fx, ey = self.p, self.cv, self.fx, self.ey
        if not p["glasses"]:
            return
        gr = p["eye_w"] * 0.5 + 3.5
        gc = _col(p["glass_col"])
        for side in (-1, 1):
            ex = fx + side * p["eye_dx"]
            if p["glass_round"]:
                cv.ell(ex, ey, gr, gr * 0.75, outline=gc, width=p["glass_th"])
            else:
                cv.rect(ex - gr, ey - gr * 0.75, ex + gr, ey + gr * 0.75, outline=gc, width=p["glass_th"])
        cv.line([(fx - p["eye_dx"] + gr, ey - 1), (fx + p["eye_dx"] - gr, ey - 1)], gc, p["glass_th"])
