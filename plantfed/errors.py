"""The plantfed exception hierarchy.

PlantfedError
 +-- ConfigError          a setting or campaign file is invalid
 +-- ModelFormatError     weights bytes that are not a valid, safe model
 +-- BlobNotFoundError    a content hash with no blob behind it
 +-- NotEnoughSitesError  fewer ready datasites than the round needs
 +-- CampaignLockedError  another coordinator holds the campaign
 +-- RoundStateError      a round record that contradicts the request
 +-- CheckpointError      checkpoints exist on disk but none of them is valid

A failed datasite is never an exception: it is a ``SiteOutcome`` with a failed status.
"""


class PlantfedError(Exception):
    """Base class of every error plantfed raises on purpose."""


class ConfigError(PlantfedError):
    """A setting or a campaign file is invalid; the message names the key and the fix."""


class ModelFormatError(PlantfedError):
    """Bytes that do not decode to a safe, well-formed set of weights."""


class BlobNotFoundError(PlantfedError):
    """No blob is stored under the requested content hash (never stored, or expired)."""


class NotEnoughSitesError(PlantfedError):
    """Fewer datasites are ready than the round or campaign requires."""


class CampaignLockedError(PlantfedError):
    """Another coordinator process holds the campaign lock."""


class RoundStateError(PlantfedError):
    """A round record in Redis contradicts what the caller expects of it."""


class CheckpointError(PlantfedError):
    """Checkpoints of a campaign exist on disk, but none of them loads and verifies."""
