"""Every way a detection can fail, each with a message a person understands.

Front ends (the CLI, the worker, the bot) show ``str(error)`` as it is; ``code`` is a stable,
machine-readable reason that crosses process boundaries (the queue) and picks a friendly reply.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Base of all detector errors. ``details``: what the message says, as data (JSON-able), for a front end
    that words it in another language."""

    code = "detector_error"

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message)
        self.details = details


class ImageError(DetectorError):
    """The input could not be used as an image."""

    code = "bad_image"


class EmptyImageError(ImageError):
    """Zero bytes."""

    code = "empty_image"


class NotAnImageError(ImageError):
    """Bytes that no supported image decoder recognises."""

    code = "not_an_image"


class UnsupportedFormatError(ImageError):
    """A recognised image format that detbot does not accept."""

    code = "unsupported_format"


class CorruptImageError(ImageError):
    """A recognised image whose data is truncated or damaged."""

    code = "corrupt_image"


class ImageTooLargeError(ImageError):
    """More pixels than the configured limit (checked from the header, before decoding)."""

    code = "image_too_large"


class TooComplexImageError(ImageError):
    """A file whose structure asks for far more parsing work than its pixels need (hostile or broken).

    ``str()`` is for the person; ``detail`` says what was found, for the logs.
    """

    code = "too_complex_image"

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class UnknownClassError(DetectorError):
    """A class filter named a class the model does not know."""

    code = "unknown_class"


class InvalidConfidenceError(DetectorError):
    """A confidence outside (0, 1]."""

    code = "invalid_confidence"


class InvalidParamsError(DetectorError):
    """Detection parameters that are not well-formed (a class filter that is not a list of names, ...)."""

    code = "invalid_params"


class ModelLoadError(DetectorError):
    """The model weights could not be found, downloaded or loaded."""

    code = "model_load_failed"
