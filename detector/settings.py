"""Detector settings, read from the environment (``DETBOT_*``) when a process builds them in ``main()``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# COCO-trained, 80 classes; ultralytics downloads it on first use for a user with internet.
DEFAULT_MODEL = "yolo26n.pt"
# 40 MP covers every phone camera; beyond that decoding alone costs hundreds of MB per image.
DEFAULT_MAX_PIXELS = 40_000_000
# Ultralytics' own default; low enough to show borderline objects, the chat can raise it.
DEFAULT_CONFIDENCE = 0.25
# A photo with more boxes than this is unreadable as a text list anyway.
DEFAULT_MAX_DETECTIONS = 100
# Telegram rescales photos whose long side is above 2560 px and refuses much larger ones.
MAX_ANNOTATED_SIDE = 2560
# Visually lossless for boxes and labels, a third of the size of quality 95.
JPEG_QUALITY = 85

Backend = Literal["auto", "torch", "onnx", "openvino"]
Precision = Literal["auto", "bf16", "f32"]


class ImageLimitSettings(BaseSettings):
    """The largest image detbot accepts: the bot refuses bigger ones from their header, the detector too."""

    model_config = SettingsConfigDict(env_prefix="DETBOT_", extra="ignore")

    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Largest accepted image, in pixels.")


class ClassNamesSettings(BaseSettings):
    """Translations of a model's class names (docs/i18n.md); the bot reads filters and writes answers with
    them, the worker draws labels with them, so both processes are given the same file."""

    model_config = SettingsConfigDict(env_prefix="DETBOT_", extra="ignore")

    class_names: str | None = Field(
        None, description="JSON file of class-name translations per language; unset: built-in COCO names."
    )


class DetectorSettings(ImageLimitSettings, ClassNamesSettings):
    """Which model to load, where, and the limits applied to every image."""

    model_config = SettingsConfigDict(env_prefix="DETBOT_", extra="ignore")

    model: str = Field(DEFAULT_MODEL, description="Path to YOLO weights, or an ultralytics model name.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    imgsz: int | None = Field(None, ge=32, le=4096, description="Inference size; default: the model's own.")
    max_detections: int = Field(DEFAULT_MAX_DETECTIONS, gt=0, le=1000)
    backend: Backend = Field("auto", description="auto, torch, onnx or openvino.")
    threads: int | None = Field(None, ge=1, description="Inference threads; default: 1 per worker on CPU.")
    use_idle_cores: bool = Field(
        True, description="Run a photo on all cores when no other worker on this machine is busy (CPU only)."
    )
    export_dir: str | None = Field(None, description="Cache folder for exported models.")
    precision: Precision = Field(
        "auto", description="OpenVINO's precision: auto (bf16 on CPUs with AMX or AVX512_BF16, else f32), bf16, f32."
    )
    int8: bool = Field(False, description="INT8-quantised OpenVINO/ONNX export (see README for its accuracy).")
    int8_data: str | None = Field(
        None, description="YOLO dataset YAML whose 'val' images calibrate the INT8 export (needs nncf)."
    )
