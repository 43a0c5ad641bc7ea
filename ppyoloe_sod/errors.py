"""Exceptions a user may see. Each message names the offending thing and what to do about it."""


class PPYOLOESODError(Exception):
    """Base class of every error this package raises on purpose."""


class WeightsError(PPYOLOESODError, ValueError):
    """A weights file is missing, corrupt, unsafe, or belongs to another model."""


class ImageReadError(PPYOLOESODError, ValueError):
    """An input image could not be found or decoded."""


class DatasetError(PPYOLOESODError, ValueError):
    """A dataset is malformed; the message lists what is wrong and where."""


class ConfigError(PPYOLOESODError, ValueError):
    """A config file or a -o override is invalid."""


class NonFiniteLossError(PPYOLOESODError, FloatingPointError):
    """The training loss became NaN or infinite; training stopped before the bad step changed any weight."""
