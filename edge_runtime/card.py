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


class ModelCard(Strict):
    """Top level of ``card.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = "1"
    description: str | None = None
    labels: list[str] | None = None
    input: CardInput
    output: CardOutput = CardOutput()
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
        return self

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
