"""The one schema a ``manifest.json`` must satisfy, checked before anything is built from it.

Every field has its JSON type (strict: ``true`` is not a number, ``"3"`` is not an
integer) and its range; the quantizer's parts agree with its kind; a known dataset's input
shape and class count are its own. A failure names the first offending field, as a dotted
path (``quantizer.thresholds.0``), so a person can find it in the file.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.registry import DATASETS, architecture_names

# Version 1 throughout: the fields added since (architecture_args, normalization, format) are
# optional with defaults that mean what a manifest without them always meant.
SCHEMA_VERSION = 1
# The architecture name of a checkpoint that holds a torch.export program (models/exported.py).
EXPORTED_ARCHITECTURE = "exported-program"
# Model names become URL path segments and Prometheus label values.
NAME_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127})?$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# A documented limit, not a dataset check (docs/models.md, "Limits"): the service decodes
# every upload to 1 (grey) or 3 (RGB) channels, so a model must take one of these. Sides
# beyond MAX_SIDE would make every request (and the warm-up) allocate far more than any
# classifier here needs.
CHANNELS = (1, 3)
MAX_SIDE = 1024
MAX_CLASSES = 100_000
MAX_LEVELS = 256

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
ClassName = Annotated[str, Field(min_length=1, max_length=256)]
ArgumentName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class QuantizerSchema(BaseModel):
    model_config = _STRICT

    kind: Literal["none", "cq", "tq"]
    levels: Annotated[int, Field(ge=2, le=MAX_LEVELS)] | None = None
    thresholds: list[float] | None = None
    steepness: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _agree_with_kind(self) -> QuantizerSchema:
        if self.kind == "none":
            if self.levels is not None or self.thresholds is not None:
                raise ValueError("an undefended model ('none') has no levels or thresholds")
            return self
        if self.levels is None:
            raise ValueError(f"a {self.kind} quantizer needs levels")
        if self.thresholds is None:
            raise ValueError(f"a {self.kind} quantizer needs its thresholds")
        if len(self.thresholds) != self.levels - 1:
            raise ValueError(
                f"{self.levels} levels need {self.levels - 1} thresholds, "
                f"got {len(self.thresholds)}"
            )
        if not all(0 < t < 1 and math.isfinite(t) for t in self.thresholds):
            raise ValueError("thresholds must lie strictly inside (0, 1)")
        if any(b <= a for a, b in zip(self.thresholds, self.thresholds[1:], strict=False)):
            raise ValueError("thresholds must be strictly increasing")
        return self


class NormalizationSchema(BaseModel):
    """Per-channel mean and std, applied after the quantizer: (q - mean) / std."""

    model_config = _STRICT

    mean: Annotated[list[float], Field(min_length=1)]
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _same_length(self) -> NormalizationSchema:
        if len(self.mean) != len(self.std):
            raise ValueError(f"{len(self.mean)} means but {len(self.std)} stds")
        return self


class MetricsSchema(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    clean_accuracy: Annotated[float, Field(ge=0, le=1)] | None = None
    clean_accuracy_soft: Annotated[float, Field(ge=0, le=1)] | None = None
    test_samples: Annotated[int, Field(ge=0)] | None = None
    train_seconds: Annotated[float, Field(ge=0)] | None = None
    # Present when train_seconds covers only the last session of a resumed run.
    train_seconds_covers: str | None = None


class ManifestSchema(BaseModel):
    model_config = _STRICT

    schema_version: Literal[1]
    format: Literal["safetensors", "exported-program"] = "safetensors"
    architecture: str
    # Keyword arguments of the architecture's factory, passed again when loading.
    architecture_args: dict[ArgumentName, Any] = Field(default_factory=dict)
    dataset: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    input_shape: Annotated[list[Side], Field(min_length=3, max_length=3)]  # [C, H, W]
    class_names: Annotated[list[ClassName], Field(min_length=2, max_length=MAX_CLASSES)]
    quantizer: QuantizerSchema
    normalization: NormalizationSchema | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    data_sha256: dict[str, Annotated[str, Field(pattern=SHA256_PATTERN)]] = Field(
        default_factory=dict
    )
    metrics: MetricsSchema = Field(default_factory=MetricsSchema)
    weights_sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    git_revision: Annotated[str, Field(max_length=256)] = "unknown"
    created_at: Annotated[str, Field(max_length=64)] = ""
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = ""  # empty: the folder's name

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("format") == "exported-program":
            if value != EXPORTED_ARCHITECTURE:
                raise ValueError(f"an exported program's architecture is {EXPORTED_ARCHITECTURE!r}")
            return value
        names = architecture_names()
        if value not in names:
            raise ValueError(
                f"{value!r} is unknown; valid: {', '.join(names)} (is the package that "
                "registers it installed?)"
            )
        return value

    @field_validator("input_shape")
    @classmethod
    def _shape_of_dataset(cls, value: list[int], info: ValidationInfo) -> list[int]:
        if value[0] not in CHANNELS:
            raise ValueError(
                f"must have 1 (grey) or 3 (RGB) channels, got {value[0]}: the service decodes "
                "images to one of these (docs/models.md, Limits)"
            )
        known = DATASETS.get(info.data.get("dataset", ""))
        if known is not None and tuple(value) != known.input_shape:
            raise ValueError(f"{value} is not {known.name}'s {list(known.input_shape)}")
        return value

    @field_validator("class_names")
    @classmethod
    def _classes_of_dataset(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("repeats a name")
        known = DATASETS.get(info.data.get("dataset", ""))
        if known is not None and len(value) != len(known.class_names):
            raise ValueError(f"{known.name} has {len(known.class_names)} classes, not {len(value)}")
        return value

    @model_validator(mode="after")
    def _normalization_per_channel(self) -> ManifestSchema:
        if self.normalization is not None and len(self.normalization.mean) != self.input_shape[0]:
            raise ValueError(
                f"normalization has {len(self.normalization.mean)} values per statistic for "
                f"{self.input_shape[0]} channels"
            )
        return self


def manifest_problem(raw: Any) -> str | None:
    """None if ``raw`` satisfies the schema, else ``"field: what is wrong"`` for the first
    offending field (``manifest`` when the problem is the whole object)."""
    try:
        ManifestSchema.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        message = first["msg"].removeprefix("Value error, ")
        return f"field {where}: {message}"
    return None
