"""The model card: what the runtime needs to feed a model raw sensor data and to name its outputs.

It is written by a person next to the model (``card.yaml``), checked against the model by the converter and
carried inside the bundle, so the device never guesses window sizes, channel order or normalisation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator


class Strict(BaseModel):
    """Base for every config model: a misspelt key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Normalize(Strict):
    """Per-channel ``(raw - mean) / std`` applied before the model sees the data."""

    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> Normalize:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        if any(value <= 0 for value in self.std):
            raise ValueError("every std must be > 0")
        return self


class TimeSeriesInput(Strict):
    """A sliding window over a multichannel sensor stream."""

    kind: Literal["timeseries"] = "timeseries"
    name: str | None = Field(None, description="model input this describes; default: the only input")
    window: int = Field(gt=0, description="samples per inference along time")
    hop: int = Field(gt=0, description="samples between two inferences")
    rate_hz: float = Field(gt=0, description="samples per second of the sensor stream")
    channels: int = Field(gt=0)
    layout: Literal["channels_first", "channels_last"] = "channels_first"
    channel_names: list[str] | None = None
    normalize: Normalize | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TimeSeriesInput:
        if self.normalize and len(self.normalize.mean) != self.channels:
            raise ValueError(f"normalize has {len(self.normalize.mean)} values for {self.channels} channels")
        if self.channel_names and len(self.channel_names) != self.channels:
            raise ValueError(f"{len(self.channel_names)} channel_names for {self.channels} channels")
        return self

    def model_shape(self) -> list[int]:
        """Shape of one model input without the batch dimension."""
        if self.layout == "channels_first":
            return [self.channels, self.window]
        return [self.window, self.channels]

    @property
    def channel_axis(self) -> int:
        """Axis of the batched model input that indexes channels."""
        return 1 if self.layout == "channels_first" else 2


class ImageInput(Strict):
    """A still image: decoded, resized, scaled and normalised per the card."""

    kind: Literal["image"] = "image"
    name: str | None = None
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[1, 3] = 3
    channel_order: Literal["rgb", "bgr", "gray"] = "rgb"
    layout: Literal["nchw", "nhwc"] = "nchw"
    scale: float = Field(1.0 / 255.0, description="multiplies raw 0-255 pixels first")
    normalize: Normalize | None = None
    resize: Literal["stretch", "letterbox"] = Field(
        "stretch", description="stretch: to height x width, aspect ratio lost; letterbox: scaled to fit, centred, "
        "the rest padded with pad_value (what YOLO and MediaPipe detectors were trained on)")
    pad_value: float = Field(114.0, ge=0, le=255, description="raw 0-255 pixel value of letterbox padding")

    @model_validator(mode="after")
    def _consistent(self) -> ImageInput:
        if (self.channel_order == "gray") != (self.channels == 1):
            raise ValueError("channel_order 'gray' goes with channels: 1, rgb/bgr with channels: 3")
        if self.normalize and len(self.normalize.mean) != self.channels:
            raise ValueError(f"normalize has {len(self.normalize.mean)} values for {self.channels} channels")
        return self

    def model_shape(self) -> list[int]:
        if self.layout == "nchw":
            return [self.channels, self.height, self.width]
        return [self.height, self.width, self.channels]

    @property
    def channel_axis(self) -> int:
        return 1 if self.layout == "nchw" else 3


class FeatureInput(Strict):
    """A flat feature vector (tabular models): every feature is its own channel."""

    kind: Literal["features"] = "features"
    name: str | None = None
    features: int = Field(gt=0)
    feature_names: list[str] | None = None
    normalize: Normalize | None = None

    def model_shape(self) -> list[int]:
        return [self.features]

    @property
    def channels(self) -> int:
        return self.features

    @property
    def channel_axis(self) -> int:
        return 1


class AudioFeatures(Strict):
    """An on-device front end for models that take features rather than samples (edge_runtime/audio/features.py).

    `log_mel`: a power spectrogram of Hann-windowed frames (`n_fft` points, one every `hop_length` samples, not
    centred: frames lie inside the window), on `n_mels` triangular mel bands (Slaney scale, area-normalised, as
    librosa's defaults), `log(mel + log_offset)`. `mfcc`: the first `n_mfcc` coefficients of an orthonormal
    DCT-II of that log-mel spectrogram. The model input is [bands, frames] (`layout: bands_first`) or [frames,
    bands], with a leading 1 when `channel_dim` is set ([1, bands, frames], as a CNN's NCHW input).
    """

    type: Literal["log_mel", "mfcc"] = "log_mel"
    n_fft: int = Field(400, gt=1, description="samples per frame (and FFT size)")
    hop_length: int = Field(160, gt=0, description="samples between two frames")
    n_mels: int = Field(64, gt=0)
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = Field(None, gt=0, description="default: half the sample rate")
    n_mfcc: int | None = Field(None, gt=0, description="mfcc only: coefficients kept (default 13)")
    log_offset: float = Field(1e-6, gt=0, description="added before the log so silence stays finite")
    layout: Literal["bands_first", "frames_first"] = "bands_first"
    channel_dim: bool = False

    def bands(self) -> int:
        return (self.n_mfcc or 13) if self.type == "mfcc" else self.n_mels

    def frames(self, window: int) -> int:
        return 1 + (window - self.n_fft) // self.hop_length

    def shape(self, window: int) -> list[int]:
        """The model input for one window of `window` samples, without the batch dimension."""
        frames, bands = self.frames(window), self.bands()
        shape = [bands, frames] if self.layout == "bands_first" else [frames, bands]
        return [1, *shape] if self.channel_dim else shape


class AudioInput(Strict):
    """Mono audio at `rate_hz`, cut into windows of `window` samples every `hop` samples; the model takes the
    samples ([batch, window], float in [-1, 1)) or, with `features`, a log-mel / MFCC spectrogram of each window.

    A model that wants context from the previous window (Silero VAD: 64 samples before each 512) gets it from a
    window longer than its hop: `window: 576, hop: 512`.
    """

    kind: Literal["audio"] = "audio"
    name: str | None = None
    rate_hz: int = Field(gt=0, description="samples per second; a stream at another rate is refused")
    window: int = Field(gt=0, description="samples per inference")
    hop: int = Field(gt=0, description="samples between two inferences")
    features: AudioFeatures | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AudioInput:
        if self.features is not None:
            if self.features.n_fft > self.window:
                raise ValueError(f"features.n_fft {self.features.n_fft} is longer than the window ({self.window})")
            if self.features.type == "mfcc" and self.features.bands() > self.features.n_mels:
                raise ValueError(f"n_mfcc {self.features.bands()} exceeds n_mels {self.features.n_mels}")
            if self.features.type == "log_mel" and self.features.n_mfcc is not None:
                raise ValueError("n_mfcc goes with features.type: mfcc")
            f_max = self.features.f_max or self.rate_hz / 2
            if f_max > self.rate_hz / 2 or self.features.f_min >= f_max:
                raise ValueError(f"mel bands need f_min < f_max <= rate_hz / 2 ({self.rate_hz / 2:g})")
        return self

    def model_shape(self) -> list[int]:
        if self.features is None:
            return [self.window]
        return self.features.shape(self.window)

    @property
    def channels(self) -> int:
        """One channel: stereo recordings are read from their first channel."""
        return 1

    @property
    def channel_axis(self) -> int:
        return 1

    @property
    def normalize(self) -> None:
        """Audio is taken as recorded (samples in [-1, 1)); a front end's log compresses its range."""
        return None


def _input_kind(value: Any) -> str:
    """Pick the input schema: explicit `kind`, else image if it has a height, else time series."""
    if isinstance(value, dict):
        if "kind" in value:
            return str(value["kind"])
        if "height" in value:
            return "image"
        if "features" in value:
            return "features"
        return "timeseries"
    return getattr(value, "kind", "timeseries")


CardInput = Annotated[
    Annotated[TimeSeriesInput, Tag("timeseries")]
    | Annotated[ImageInput, Tag("image")]
    | Annotated[FeatureInput, Tag("features")]
    | Annotated[AudioInput, Tag("audio")],
    Discriminator(_input_kind),
]


class CardOutput(Strict):
    """How to read the model's output."""

    kind: Literal["classification", "regression", "raw"] = "classification"
    name: str | None = Field(None, description="model output this describes; default: the first output")
    scores: Literal["auto", "logits", "probabilities"] = Field(
        "auto", description="auto: treated as probabilities when every row sums to 1"
    )
    threshold: float | None = Field(
        None, description="regression: predictions add `decision`, true when a value reaches the threshold"
    )

    @model_validator(mode="after")
    def _threshold_for_regression(self) -> CardOutput:
        if self.threshold is not None and self.kind != "regression":
            raise ValueError(f"threshold goes with kind: regression (a decision on the values), not {self.kind}")
        return self


#: a constant input's value: a number or nested lists of numbers, cast to the model input's dtype
ConstantValue = Any


def _numeric(value: Any) -> bool:
    if isinstance(value, list):
        return all(_numeric(item) for item in value)
    return isinstance(value, bool | int | float)


class SsdAnchors(Strict):
    """MediaPipe's SsdAnchorsCalculatorOptions, same names: the anchors an SSD head's offsets are relative to.

    Copy them from the model's .pbtxt; input_size_height/width default to the card's input size.
    """

    num_layers: int = Field(gt=0)
    strides: list[int] = Field(min_length=1)
    min_scale: float = Field(gt=0)
    max_scale: float = Field(gt=0)
    input_size_height: int | None = Field(None, gt=0)
    input_size_width: int | None = Field(None, gt=0)
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    aspect_ratios: list[float] = Field(default_factory=lambda: [1.0])
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = False
    reduce_boxes_in_lowest_layer: bool = False
    feature_map_height: list[int] | None = None
    feature_map_width: list[int] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SsdAnchors:
        if len(self.strides) != self.num_layers:
            raise ValueError(f"{len(self.strides)} strides for num_layers {self.num_layers}")
        for name in ("feature_map_height", "feature_map_width"):
            sizes = getattr(self, name)
            if sizes is not None and len(sizes) != self.num_layers:
                raise ValueError(f"{len(sizes)} {name} values for num_layers {self.num_layers}")
        return self


class SsdDecoder(Strict):
    """MediaPipe's TensorsToDetectionsCalculatorOptions that decode boxes and scores, same names."""

    x_scale: float = Field(gt=0)
    y_scale: float = Field(gt=0)
    w_scale: float = Field(gt=0)
    h_scale: float = Field(gt=0)
    box_coord_offset: int = Field(0, ge=0)
    reverse_output_order: bool = Field(False, description="true: x, y, w, h per box; false: y, x, h, w")
    apply_exponential_on_box_size: bool = False
    sigmoid_score: bool = True
    score_clipping_thresh: float | None = Field(None, gt=0)


class DetectionOutputs(Strict):
    """Which model output holds what; unnamed ones are taken by position (see edge_runtime/detection/)."""

    boxes: str | None = None
    scores: str | None = None
    classes: str | None = None
    count: str | None = None


class DetectionOutput(Strict):
    """An object detector: its output tensors are decoded into boxes in the source frame's pixels.

    Formats: `yolo` (a dense head [1, 4+classes(+1), N] or [1, N, 4+classes(+1)], boxes cx, cy, w, h in input
    pixels or normalised, with or without objectness), `ssd` (anchor offsets decoded with anchors generated from
    `anchors`, MediaPipe style) and `postprocessed` (the graph ends in a detection post-process: boxes, classes,
    scores, count).
    """

    kind: Literal["detection"] = "detection"
    format: Literal["yolo", "ssd", "postprocessed"] = "yolo"
    name: str | None = Field(None, description="yolo: the model output holding the head; default: the first")
    score_threshold: float = Field(0.25, ge=0, le=1)
    iou_threshold: float = Field(0.45, gt=0, le=1)
    max_detections: int = Field(100, gt=0)
    boxes: Literal["auto", "pixels", "normalized"] = Field(
        "auto", description="yolo box units: input pixels, or normalised to [0, 1]; auto: normalised when every "
        "candidate box fits in [0, 1.5]")
    objectness: bool | None = Field(
        None, description="yolo: the head has an objectness row (YOLOv5 style); default: from the labels' count, "
        "else no")
    anchors: SsdAnchors | None = None
    decoder: SsdDecoder | None = None
    outputs: DetectionOutputs | None = None

    @model_validator(mode="after")
    def _format_options(self) -> DetectionOutput:
        ssd_only = [key for key in ("anchors", "decoder") if getattr(self, key) is not None]
        if self.format == "ssd" and len(ssd_only) != 2:
            raise ValueError("format ssd needs `anchors` (SsdAnchorsCalculator options) and `decoder` "
                             "(x_scale, y_scale, w_scale, h_scale, ...)")
        if self.format != "ssd" and ssd_only:
            raise ValueError(f"{' and '.join(ssd_only)} apply to format ssd only, not {self.format}")
        if self.format == "yolo" and self.outputs is not None:
            raise ValueError("format yolo reads one output: name it with `name`, not `outputs`")
        return self


def _output_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "detection" if kind == "detection" else "plain"


CardOutputSpec = Annotated[
    Annotated[CardOutput, Tag("plain")] | Annotated[DetectionOutput, Tag("detection")],
    Discriminator(_output_kind),
]


class ModelCard(Strict):
    """Top level of ``card.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = "1"
    description: str | None = None
    labels: list[str] | None = None
    input: CardInput
    output: CardOutputSpec = CardOutput()
    constants: dict[str, ConstantValue] = Field(
        default_factory=dict, description="model input -> value fed on every call (e.g. a sample rate)"
    )
    state: dict[str, str] = Field(
        default_factory=dict,
        description="state input -> the output that feeds it on the next call of the same stream (zeros first)",
    )

    @model_validator(mode="after")
    def _labels_for_classifiers(self) -> ModelCard:
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.output.kind == "detection" and not isinstance(self.input, ImageInput):
            raise ValueError(f"a detection output needs an image input, not {self.input.kind}")
        return self

    @property
    def is_detector(self) -> bool:
        return self.output.kind == "detection"

    @field_validator("constants")
    @classmethod
    def _constants_not_streamed(cls, constants: dict[str, ConstantValue], info: ValidationInfo) -> dict:
        """Streamed, constant and state inputs are disjoint (which model inputs they cover is checked against the
        model: edge_runtime/feeds.py); a field validator, so an error points at the `constants:` line."""
        for name, value in constants.items():
            if not _numeric(value):
                raise ValueError(f"constants.{name}: {value!r} is not a number or a list of numbers")
        spec = info.data.get("input")
        streamed = getattr(spec, "name", None)
        if streamed is not None and streamed in constants:
            raise ValueError(f"input '{streamed}' is both the streamed input and a constant")
        return constants

    @field_validator("state")
    @classmethod
    def _state_inputs_disjoint(cls, state: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        spec = info.data.get("input")
        streamed = getattr(spec, "name", None)
        for name in state:
            if name == streamed:
                raise ValueError(f"input '{name}' is both the streamed input and a state input")
            if name in (info.data.get("constants") or {}):
                raise ValueError(f"input '{name}' is both a constant and a state input")
        outputs = list(state.values())
        twice = sorted({output for output in outputs if outputs.count(output) > 1})
        if twice:
            raise ValueError(f"output '{twice[0]}' feeds more than one state input")
        return state

    @property
    def stateful(self) -> bool:
        return bool(self.state)
