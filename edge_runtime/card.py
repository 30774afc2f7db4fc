"""The model card: what the runtime needs to feed a model raw sensor data and to name its outputs.

It is written by a person next to the model (``card.yaml``), checked against the model by the converter and
carried inside the bundle, so the device never guesses window sizes, channel order or normalisation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


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
    | Annotated[FeatureInput, Tag("features")],
    Discriminator(_input_kind),
]


class CardOutput(Strict):
    """How to read the model's output."""

    kind: Literal["classification", "regression", "raw"] = "classification"
    name: str | None = Field(None, description="model output this describes; default: the first output")
    scores: Literal["auto", "logits", "probabilities"] = Field(
        "auto", description="auto: treated as probabilities when every row sums to 1"
    )


class ModelCard(Strict):
    """Top level of ``card.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = "1"
    description: str | None = None
    labels: list[str] | None = None
    input: CardInput
    output: CardOutput = CardOutput()

    @model_validator(mode="after")
    def _labels_for_classifiers(self) -> ModelCard:
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self
